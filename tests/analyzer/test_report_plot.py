"""The "denials over time" plot: the bucket follows the data's time span (a burst in one second is one bar per
cause, a week is a few dozen), on plain numeric axes; it used to spend minutes placing date ticks on a burst."""

from __future__ import annotations

import base64

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitrace.analyzer import report, session

T0 = 1_790_000_000.0


def _frame(seconds: list[float], causes: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"time": seconds, "cause": causes})


def test_every_denial_in_one_second_is_one_bar_per_cause():
    # as `jitrace lab clock_drift --calls 3` produces it: three denials within the same second
    df = _frame([T0 + 0.1, T0 + 0.4, T0 + 0.45], ["clock_drift", "clock_drift", "token_expired"])
    fig, ax = plt.subplots()
    try:
        assert report.draw_denials_over_time(ax, df) == 1
        heights = sorted(p.get_height() for p in ax.patches)
        assert heights == [1, 2] and ax.get_ylabel() == "denials per 1 s"
    finally:
        plt.close(fig)


def test_identical_instants_and_a_single_denial_render():
    for seconds in ([T0], [T0] * 50):
        fig, ax = plt.subplots()
        try:
            assert report.draw_denials_over_time(ax, _frame(seconds, ["token_missing"] * len(seconds))) == 1
            assert [p.get_height() for p in ax.patches] == [len(seconds)]
        finally:
            plt.close(fig)


@settings(max_examples=60, deadline=None)
@given(offsets=st.lists(st.floats(0, 40 * 86400, allow_nan=False), min_size=1, max_size=40))
def test_the_bucket_follows_the_time_span_and_bars_stay_few(offsets):
    seconds = [T0 + o for o in offsets]
    width, index = report.time_buckets(seconds)
    span = max(offsets) - min(offsets)
    assert width in report.BUCKET_WIDTHS_S
    assert max(index) + 1 <= report.MAX_BUCKETS and min(index) == 0
    assert span / width < report.MAX_BUCKETS  # the smallest width that gives few enough bars
    smaller = [w for w in report.BUCKET_WIDTHS_S if w < width]
    assert not smaller or span / smaller[-1] >= report.MAX_BUCKETS
    fig, ax = plt.subplots()
    try:
        n = report.draw_denials_over_time(ax, _frame(seconds, ["policy_mismatch"] * len(seconds)))
        assert n == max(index) + 1 and sum(p.get_height() for p in ax.patches) == len(seconds)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("rows", [0, 3])
def test_the_plot_reads_attributions_and_returns_a_png(rows):
    con = session.connect()
    session.run_queries(con)
    if rows:
        con.execute("INSERT INTO attributions (time, cause) SELECT make_timestamp(?::BIGINT), 'clock_drift' "
                    "FROM range(?)", [int(T0 * 1e6), rows])
    png = base64.b64decode(report.plot_denials_over_time(con))
    assert png.startswith(b"\x89PNG")
