"""The report's plots, inline SVG drawn by analyzer/outputs/_svg.py from a few SQL-counted rows.

"Denials over time": the bucket follows the data's time span (a burst in one second is one bar per cause, a week is
a few dozen) and DuckDB counts per bucket and cause; the bars drawn (their ``data-count``) add up to the denials.
Clock offsets: one bar per host with "+1.2 ± 0.3 ms" for one window, a line per host for several. Every text from
the data is escaped. The axes' ticks are few and round."""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from jitrace.analyzer.outputs import _svg, report
from jitrace.analyzer.steps import session
from jitrace.instrumentation import contract

T0_US = 1_790_000_000 * 1_000_000  # an arbitrary instant, microseconds since the epoch
W0 = datetime(2026, 9, 21, 10, 0)
HOSTILE = "<script>alert('x')</script>"
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


@pytest.fixture(scope="module")
def module_con():
    con = session.connect()
    session.run_queries(con)
    yield con
    con.close()


@pytest.fixture
def con(module_con):
    """The analysis tables, empty (a fresh session costs about a second, so the module shares one)."""
    for table in ("attributions", "clock_offsets", "top_offenders"):
        module_con.execute(f"DELETE FROM {table}")
    return module_con


def _denials(con, micros: list[int], causes: list[str]) -> None:
    con.execute("DELETE FROM attributions")
    con.execute("INSERT INTO attributions (time, cause) SELECT make_timestamp(t), c "
                "FROM (SELECT unnest(?::BIGINT[]) AS t, unnest(?::VARCHAR[]) AS c)", [micros, causes])


def _bars(svg: str) -> list[tuple[str, float]]:
    """(series, count) of every bar drawn (legend keys carry no data-count)."""
    bars = re.findall(r'<rect [^>]*data-series="([^"]*)" data-count="([^"]*)"', svg)
    return [(html.unescape(s), float(n)) for s, n in bars]


def _attr(svg: str, name: str) -> str:
    return re.search(rf'<svg [^>]*data-{name}="([^"]*)"', svg).group(1)


def test_every_denial_in_one_second_is_one_bar_per_cause(con):
    # as `jitrace lab clock_drift --calls 3` produces it: three denials within the same second
    _denials(con, [T0_US + 100_000, T0_US + 400_000, T0_US + 450_000], ["clock_drift", "clock_drift", "token_expired"])
    svg = report.plot_denials_over_time(con)
    assert _attr(svg, "buckets") == "1" and _attr(svg, "bucket-s") == "1"
    assert sorted(_bars(svg)) == [("clock_drift", 2), ("token_expired", 1)]
    assert "denials per 1 s" in svg and "s since 2026-09-21 " in svg and "UTC (first denial)" in svg
    # the legend follows contract.CAUSES, and each cause has its own colour
    assert svg.index(">clock_drift<") < svg.index(">token_expired<")
    assert report.cause_color("clock_drift") != report.cause_color("token_expired")


def test_identical_instants_a_single_denial_and_no_denial_render(con):
    for micros in ([T0_US], [T0_US] * 50):
        _denials(con, micros, ["token_missing"] * len(micros))
        con.execute("INSERT INTO attributions (time, cause) VALUES (NULL, 'token_missing')")  # not on a time axis
        svg = report.plot_denials_over_time(con)
        assert _attr(svg, "buckets") == "1" and _bars(svg) == [("token_missing", len(micros))]
    _denials(con, [], [])
    svg = report.plot_denials_over_time(con)
    assert _attr(svg, "buckets") == "0" and ">no denials<" in svg and not _bars(svg)


def time_buckets(seconds: list[float]) -> tuple[float, list[int]]:
    """The bucketing rule in plain Python, the oracle for the SQL of report.denial_counts: (bucket width, bucket
    index of each instant counted from the first)."""
    first = min(seconds)
    width = report.bucket_width(max(seconds) - first)
    return width, [int((s - first) // width) for s in seconds]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(denials=st.lists(st.tuples(st.integers(0, 40 * 86400 * 1_000_000), st.sampled_from(contract.CAUSES)),
                        min_size=1, max_size=40))
@example(denials=[(0, "clock_drift"), (60_000_000, "token_expired")])  # 60 s: 60 one-second buckets are too many
@example(denials=[(0, "clock_drift"), (59_999_999, "token_expired"), (59_000_000, "clock_drift")])  # just fits
@example(denials=[(7, "token_missing"), (7 + 300 * 60_000_000, "token_missing"), (5 * 60_000_000, "unexplained")])
def test_the_bucket_follows_the_time_span_and_sql_counts_every_denial(con, denials):
    offsets, causes = [o for o, _ in denials], [c for _, c in denials]
    seconds = [(o - min(offsets)) / 1e6 for o in offsets]  # as stored: whole microseconds
    width, index = time_buckets(seconds)
    span = max(seconds)
    assert width in report.BUCKET_WIDTHS_S
    assert max(index) + 1 <= report.MAX_BUCKETS and min(index) == 0
    assert span / width < report.MAX_BUCKETS  # the smallest width that gives few enough bars
    smaller = [w for w in report.BUCKET_WIDTHS_S if w < width]
    assert not smaller or span / smaller[-1] >= report.MAX_BUCKETS

    _denials(con, [T0_US + o for o in offsets], causes)
    sql_width, first, rows = report.denial_counts(con)
    assert sql_width == width and first == datetime(1970, 1, 1) + timedelta(microseconds=T0_US + min(offsets))
    assert Counter({(b, c): n for b, c, n in rows}) == Counter(zip(index, causes, strict=True))  # same buckets
    svg = report.plot_denials_over_time(con)
    assert int(_attr(svg, "buckets")) == max(index) + 1 and float(_attr(svg, "bucket-s")) == width
    drawn = Counter()
    for cause, n in _bars(svg):
        drawn[cause] += n
    assert drawn == Counter(causes)  # the bar heights add up to the denials, per cause


def test_longer_than_sixty_weeks_widens_the_bucket_evenly(con):
    span_us = 100 * 7 * 86400 * 1_000_000
    _denials(con, [T0_US, T0_US + span_us // 3, T0_US + span_us], ["token_expired"] * 3)
    width, _, rows = report.denial_counts(con)
    assert width == pytest.approx(span_us / 1e6 / (report.MAX_BUCKETS - 1))
    assert [b for b, _, _ in rows] == [0, 19, 59]
    svg = report.plot_denials_over_time(con)
    assert _attr(svg, "buckets") == "60" and sum(n for _, n in _bars(svg)) == 3 and ">d since " in svg


def test_two_hundred_thousand_denials_are_counted_in_sql(con):
    con.execute("INSERT INTO attributions (time, cause) SELECT make_timestamp(? + i * 3_000_000), "
                "(?::VARCHAR[])[1 + i % 10] FROM range(200000) t(i)", [T0_US, list(contract.CAUSES)])
    width, _, rows = report.denial_counts(con)
    assert width == 3600 * 6 and len(rows) <= report.MAX_BUCKETS * len(contract.CAUSES)  # few rows reach Python
    svg = report.plot_denials_over_time(con)
    assert sum(n for _, n in _bars(svg)) == 200_000 and int(_attr(svg, "buckets")) < report.MAX_BUCKETS


def _offsets(con, rows: list[tuple[str, int, float, float]], rate_ppm: float = 0.0) -> None:
    """rows of (domain, segment number, offset_s, error_s), 5-minute segments relative to 'issuer', the bound
    offset_s +- error_s."""
    con.execute("DELETE FROM clock_offsets")
    for domain, w, off, err in rows:
        start = W0 + timedelta(minutes=5 * w)
        con.execute("INSERT INTO clock_offsets VALUES (?, 'issuer', ?, ?, ?, ?, 10, ?, ?, ?)",
                    [domain, start, start + timedelta(minutes=5), off, err, off - err, off + err, rate_ppm])


def test_one_window_is_one_bar_per_host_with_its_bound(con):
    _offsets(con, [("gateway", 0, 0.0012, 0.0003), ("replica", 0, -0.0005, 0.0001), ("issuer", 0, 0.0, 0.0)])
    svg = report.plot_offsets(con)
    assert sorted(_bars(svg)) == [("gateway", 1.2), ("issuer", 0.0), ("replica", -0.5)]
    for label in ("+1.2 ± 0.3 ms", "-0.5 ± 0.1 ms", "+0.0 ± 0.0 ms"):
        assert f">{label}<" in svg
    assert "offset vs issuer (ms; positive = ahead)" in svg and "<polyline" not in svg


@FIXTURE_OK
@given(offsets=st.dictionaries(st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1,
                                       max_size=12),
                               st.tuples(st.floats(-100, 100), st.floats(0, 1)), min_size=1, max_size=8))
def test_every_host_gets_one_bar_and_its_label(con, offsets):
    _offsets(con, [(d, 0, off, err) for d, (off, err) in offsets.items()])
    svg = report.plot_offsets(con)
    expected = sorted((d, pytest.approx(off * 1e3, rel=1e-9, abs=1e-9)) for d, (off, _) in offsets.items())
    assert sorted(_bars(svg)) == expected
    for off, err in offsets.values():
        assert html.escape(f"{off * 1e3:+.1f} ± {err * 1e3:.1f} ms") in svg
    assert _attr(svg, "series") == str(len(offsets))


def test_several_segments_draw_each_hosts_line_over_its_band_and_mark_steps(con):
    # "a" steps by +5 ms between its second and third segment (beyond both bands); "b" moves within its band
    _offsets(con, [(d, w, off + (0.005 if d == "a" and w == 2 else 1e-4 * w), 2e-4) for w in range(3)
                   for d, off in (("a", 0.002), ("b", -0.001))] + [("issuer", w, 0.0, 0.0) for w in range(3)])
    svg = report.plot_offsets(con)
    groups = re.findall(r'<g data-series="([^"]*)">(.*?)</g>', svg)
    assert [g for g, _ in groups] == ["a", "b", "issuer"] and _attr(svg, "series") == "3"
    assert all(body.count("<polyline") == 3 and body.count("<polygon") == 3 for _, body in groups)
    steps = {g: re.findall(r'data-step="([^"]*)"', body) for g, body in groups}
    assert steps == {"a": ["step of +4.900 ms at 10:10:00"], "b": [], "issuer": []}
    assert "minutes since 2026-09-21 10:00 UTC" in svg and "positive = clock ahead of issuer" in svg
    assert not _bars(svg)


def test_one_drifting_segment_is_a_line_not_a_bar(con):
    _offsets(con, [("a", 0, 0.002, 1e-4), ("issuer", 0, 0.0, 0.0)], rate_ppm=50.0)  # 15 ms over 5 minutes
    svg = report.plot_offsets(con)
    assert not _bars(svg) and svg.count("<polygon") == 2


@pytest.mark.parametrize(("references", "expected"), [
    (["issuer", "issuer", "consensus"], "issuer"),
    (["issuer", "consensus"], "consensus"),  # a tie: the first by name, every run
    (["zeta", "consensus", "zeta"], "zeta"),
])
def test_the_plot_names_the_clock_reference_summary_json_names(con, references, expected):
    con.execute("DELETE FROM clock_offsets")
    for i, ref in enumerate(references):
        con.execute("INSERT INTO clock_offsets VALUES (?, ?, ?, ?, 0.001, 0.0001, 10, 0.0009, 0.0011, 0)",
                    [f"host{i}", ref, W0, W0 + timedelta(minutes=5)])
    assert report.clock_reference(con) == expected
    assert f"offset vs {expected} (ms; positive = ahead)" in report.plot_offsets(con)


def test_no_offsets_and_no_offenders_say_so(con):
    assert ">no client/server pairs across hosts<" in report.plot_offsets(con)
    assert ">no denials<" in report.plot_offenders(con)


def test_top_offenders_label_cause_dimension_and_value(con):
    con.execute("INSERT INTO top_offenders VALUES ('clock_drift', 'service', 'orders', 7, 1), "
                "('clock_drift', 'principal', 'bob', 5, 1), ('clock_drift', 'method', 'Read', 7, 1), "
                "('token_missing', 'service', 'orders', 2, 4)")  # methods and ranks past 3 are left out
    svg = report.plot_offenders(con)
    assert sorted(_bars(svg)) == [("clock_drift", 5), ("clock_drift", 7)]
    assert ">clock_drift · service: orders<" in svg and ">clock_drift · principal: bob<" in svg
    assert "Read" not in svg


def test_data_is_escaped_in_the_svg_and_the_tables(con, tmp_path):
    con.execute("INSERT INTO attributions (time, cause, service, principal) VALUES "
                "(make_timestamp(?::BIGINT), ?, ?, ?)", [T0_US, HOSTILE, HOSTILE, HOSTILE])
    con.execute("INSERT INTO top_offenders VALUES ('policy_mismatch', 'service', ?, 1, 1)", [HOSTILE])
    escaped = html.escape(HOSTILE)
    for windows in (2, 1):  # a line per host (its name in the legend), then a bar per host (on the axis)
        _offsets(con, [(d, w, 0.001, 0.0001) for w in range(windows) for d in (HOSTILE, "issuer")])
        page = tmp_path / "report.html"
        report.write_html(con, page, {"spans": 2, "logs": 0, "denials": 1, "bad_records": 0,
                                      "clock_reference": HOSTILE})
        text = page.read_text()
        assert HOSTILE not in text
        # the one place the string stands unescaped as HTML would: the summary's JSON, where < and > are \u escapes
        assert "alert('x')" not in text.replace(r"\u003cscript\u003ealert('x')\u003c/script\u003e", "")
        # ours: the denials' data and script, the plots-loaded check and summary-json
        assert text.count("<script") == 4
        for figure in ("denials-over-time", "clock-offsets", "top-offenders"):  # legend, axis labels
            assert escaped in text.split(f'id="{figure}">', 1)[1].split("</figure>", 1)[0], figure
        # the denials travel as JSON the page's script shows as text: the string whole, no < in the element
        embedded = text.split('<script type="application/json" id="denials-json">', 1)[1].split("</script>", 1)[0]
        assert "<" not in embedded and HOSTILE in json.loads(embedded)["dicts"]["service"]


def test_table_shows_null_as_empty_and_escapes():
    assert report.html_table(["a", "b"], []) == "<p><em>none</em></p>"
    out = report.html_table(["a&b", "c"], [(None, "<i>"), (1.5, 0)])
    assert "<th>a&amp;b</th>" in out and "<td></td><td>&lt;i&gt;</td>" in out and "<td>1.5</td><td>0</td>" in out


@given(lo=st.floats(-1e6, 1e6), span=st.floats(1e-3, 1e7), target=st.integers(3, 8), integer=st.booleans(),
       slack=st.sampled_from([None, 0.1]))
def test_axes_get_a_few_round_ticks_covering_the_data(lo, span, target, integer, slack):
    hi = lo + span
    assume(hi > lo)
    a, b, step = _svg.nice_range(lo, hi, target, integer=integer, slack=slack)
    assert a <= lo + 1e-9 * step and b >= hi - 1e-9 * step
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 9) in (1, 2, 5)
    n = len(_svg.ticks(a, b, step))
    assert 2 <= n <= 2 * target + 2
    if integer:
        assert step >= 1 and float(step).is_integer()
    snapped = _svg.nice_range(lo, hi, target, integer=integer)
    if slack and (a, b, step) != snapped:  # else it kept whole steps to keep two ticks
        # no more than the slack (or a 2% margin) left empty at either end
        assert lo - a <= max(slack * (snapped[1] - snapped[0]), 0.02 * span) + 1e-9 * step
        assert b - hi <= max(slack * (snapped[1] - snapped[0]), 0.02 * span) + 1e-9 * step


def test_tick_labels_are_short():
    assert [_svg.fmt(t, 0.1) for t in _svg.ticks(0, 0.3, 0.1)] == ["0", "0.1", "0.2", "0.3"]
    assert _svg.fmt(20000, 5000) == "20,000" and _svg.fmt(-0.0, 1) == "0" and _svg.fmt(2.5e-5, 5e-6) == "0.000025"
