"""The notebooks' helpers answer their questions right on an output whose causes are known."""

from __future__ import annotations

import pytest
from spanfactory import T0, Token, World

from jitrace.analyzer import notebook as inv
from jitrace.analyzer.analyze import analyze
from jitrace.analyzer.notebook import open_output


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    world = World(offsets={"server-host": 120.0})
    long = Token(iat=T0, exp=T0 + 3600, sub="alice", jti="long")
    short = Token(iat=T0, exp=T0 + 300, sub="bob", jti="short")
    world.issue(long, T0)
    world.issue(short, T0)
    for i in range(6):
        world.call(T0 + 1 + i, long)  # healthy, ttl at send ~3600 s
    world.call(T0 + 320, short)  # sent already expired: token_expired
    world.call(T0 + 250, short)  # the server is 120 s ahead: clock_drift
    world.call(T0 + 30, long, method="Write", required="orders.write")  # policy_mismatch
    folder = tmp_path_factory.mktemp("out")
    (folder / "in").mkdir()
    world.write_parquet(folder / "in" / "spans.parquet")
    analyze([str(folder / "in")], folder, quiet=True)
    return open_output(folder)


def test_denials_by_cause_counts_each_denial_once(out):
    df = inv.denials_by(out, "cause")
    assert dict(zip(df["cause"], df["denials"], strict=True)) == {
        "token_expired": 1, "clock_drift": 1, "policy_mismatch": 1}


def test_drifting_hosts_names_the_server_and_its_offset(out):
    hosts = inv.drifting_hosts(out)
    assert hosts["domain"].tolist() == ["server-host"]
    assert hosts["worst_offset_s"].iloc[0] == pytest.approx(120.0, abs=0.01)


def test_refresh_what_if_counts_prevented_denials_and_refreshes(out):
    what_if = inv.refresh_what_if(out, [-1e9, 0, 60, 7200]).set_index("threshold_s")
    # the one lifetime denial was sent with ttl < 0: never refreshing keeps it, refreshing expired tokens prevents it
    assert what_if.loc[-1e9, "prevented"] == 0
    assert what_if.loc[0.0, "prevented"] == 1 == what_if.loc[0.0, "lifetime_denials"]
    assert what_if.loc[60.0, "refreshes"] == 2  # the short token at 250 s (ttl 50 s) and at 320 s
    # a threshold above every token's lifetime refreshes on every call
    assert what_if.loc[7200.0, "refreshes"] == what_if.loc[7200.0, "calls"] == 9


def test_policy_denials_show_required_versus_granted(out):
    df = inv.policy_denials(out)
    assert df[["required", "granted", "denials"]].values.tolist() == [["orders.write", "orders.read", 1]]


def test_trace_spans_and_evidence_of_one_denial(out):
    row = out.attributions[out.attributions["cause"] == "clock_drift"].iloc[0]
    spans = inv.trace_spans(out, row["trace_id"])
    assert spans["kind"].tolist() == ["CLIENT", "SERVER"]
    assert spans["verdict"].iloc[1] == "expired"
    flipped = inv.flipped_by_correction(out)
    assert flipped["trace_id"].tolist() == [row["trace_id"]]
