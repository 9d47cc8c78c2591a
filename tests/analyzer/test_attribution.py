"""Every cause of docs/contract.md, from spans recorded the way the instrumentation records them: one denial each,
attributed to the right cause and rule with the evidence numbers, and healthy calls never reported."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from spanfactory import T0, Token, World

from jitrace.analyzer.steps import pipeline, session
from jitrace.instrumentation import contract as c


def analyze(world: World, **settings: float) -> pd.DataFrame:
    con = session.connect()
    world.load(con)
    session.run_queries(con, settings=settings)
    df = con.execute("SELECT * FROM attributions").df()
    df["evidence"] = df["evidence"].map(json.loads)
    return df


def healthy_world(offsets: dict[str, float] | None = None, calls: int = 5, **kw) -> tuple[World, Token]:
    """A world whose hosts talk enough to estimate their clocks; returns it and a valid token."""
    world = World(offsets=offsets or {}, **kw)
    token = Token(iat=T0, exp=T0 + 3600)
    world.issue(token, T0)
    for i in range(calls):
        assert world.call(T0 + 1 + i, token)["status"] == 0
    return world, token


def only(df: pd.DataFrame) -> pd.Series:
    assert len(df) == 1, df[["cause", "rule"]]
    return df.iloc[0]


def test_healthy_calls_are_never_reported():
    world, token = healthy_world({"client-host": 0.3, "server-host": -2.0}, calls=20)
    assert analyze(world).empty


def test_token_missing():
    world, _ = healthy_world()
    call = world.call(T0 + 10, None)
    row = only(analyze(world))
    assert (row.cause, row.rule, row.trace_id, row.span_id) == (
        "token_missing", "verdict_missing", call["trace_id"], call["server"]["span_id"])
    assert row.evidence["verdict"] == "missing" and row.status_code == c.UNAUTHENTICATED
    assert row.confidence >= 0.9 and "credentials" in row.fix


def test_token_invalid():
    world, _ = healthy_world()
    bad = Token(exp=T0 + 3600, bad="bad_signature")
    world.issue(bad, T0 + 5)
    world.call(T0 + 10, bad)
    row = only(analyze(world))
    assert (row.cause, row.rule, row.evidence["verdict"]) == ("token_invalid", "verdict_invalid", "bad_signature")


def test_clock_drift_server_ahead_says_expired():
    world, _ = healthy_world({"server-host": 120.0})
    tok = Token(iat=T0, exp=T0 + 300)
    world.issue(tok, T0)
    call = world.call(T0 + 250, tok)  # server reads T0+370: expired; true ttl 50 s
    assert call["status"] == c.UNAUTHENTICATED
    row = only(analyze(world))
    assert (row.cause, row.rule) == ("clock_drift", "server_clock_expired_flip")
    ev = row.evidence
    assert ev["drifting_host"] == "server-host" and "server-host" in row.fix
    assert ev["server_offset_s"] == pytest.approx(120.0, abs=0.002)
    assert ev["ttl_at_check_s"] == pytest.approx(-70.002, abs=0.01)
    assert ev["ttl_at_check_true_s"] == pytest.approx(49.998, abs=0.01)
    assert ev["offset_reference"] == "issuer" and ev["leeway_s"] == 0


def test_clock_drift_server_behind_says_not_yet_valid():
    world, _ = healthy_world({"server-host": -60.0})
    tok = Token(iat=T0 + 100, nbf=T0 + 100, exp=T0 + 1000)
    world.issue(tok, T0 + 100)
    world.call(T0 + 110, tok)
    row = only(analyze(world))
    assert (row.cause, row.rule) == ("clock_drift", "server_clock_not_yet_valid_flip")
    assert row.evidence["server_offset_s"] == pytest.approx(-60.0, abs=0.002)
    assert row.evidence["check_true_time_s"] == pytest.approx(T0 + 110.001, abs=0.01)


def test_clock_drift_server_ahead_leaves_grant_window():
    world, _ = healthy_world({"server-host": 600.0})
    tok = Token(iat=T0, exp=T0 + 3600, grant_id="g1", grant_start=T0, grant_end=T0 + 500)
    world.issue(tok, T0)
    world.call(T0 + 100, tok)
    row = only(analyze(world))
    assert (row.cause, row.rule) == ("clock_drift", "server_clock_grant_flip")
    assert row.evidence["grant_end"] == T0 + 500 and row.evidence["check_time_s"] > T0 + 500


def test_clock_drift_client_behind_did_not_refresh():
    world, _ = healthy_world({"client-host": -120.0})
    tok = Token(iat=T0, exp=T0 + 300)
    world.issue(tok, T0)
    world.call(T0 + 310, tok)  # client reads T0+190: 110 s left, no refresh; the token expired 10 s before
    row = only(analyze(world))
    assert (row.cause, row.rule) == ("clock_drift", "client_clock_hid_expiry")
    ev = row.evidence
    assert ev["drifting_host"] == "client-host"
    assert ev["ttl_at_send_s"] == pytest.approx(110.0, abs=0.01)
    assert ev["ttl_at_send_true_s"] == pytest.approx(-10.0, abs=0.01)


def test_token_expired_before_send():
    world, _ = healthy_world()
    tok = Token(iat=T0, exp=T0 + 300)
    world.issue(tok, T0)
    world.call(T0 + 310, tok)
    row = only(analyze(world))
    assert (row.cause, row.rule) == ("token_expired", "expired_before_send")
    assert row.evidence["ttl_at_send_true_s"] == pytest.approx(-10.0, abs=0.01)
    assert "refresh" in row.fix


def test_middleware_latency():
    world, _ = healthy_world({"server-host": 0.05})  # a small, known offset: corrected away, not blamed
    tok = Token(iat=T0, exp=T0 + 300)
    world.issue(tok, T0)
    world.call(T0 + 299.5, tok, wait_s=2.0)
    row = only(analyze(world))
    assert (row.cause, row.rule) == ("middleware_latency", "expired_during_wait")
    ev = row.evidence
    assert ev["wait_s"] == 2.0
    assert ev["ttl_at_arrival_true_s"] == pytest.approx(0.499, abs=0.003)
    assert ev["ttl_at_check_true_s"] == pytest.approx(-1.501, abs=0.003)


def test_token_expired_in_flight():
    world, _ = healthy_world()
    tok = Token(iat=T0, exp=T0 + 300)
    world.issue(tok, T0)
    world.call(T0 + 299.9, tok, transit_s=0.5)
    row = only(analyze(world))
    assert (row.cause, row.rule) == ("token_expired_in_flight", "expired_in_flight")
    assert row.evidence["ttl_at_send_true_s"] == pytest.approx(0.1, abs=0.003)
    assert row.evidence["ttl_at_arrival_true_s"] == pytest.approx(-0.4, abs=0.003)


def test_grant_not_active():
    world, _ = healthy_world()
    tok = Token(iat=T0, exp=T0 + 3600, grant_id="g7", grant_start=T0 + 1000, grant_end=T0 + 2000)
    world.issue(tok, T0)
    world.call(T0 + 100, tok)
    row = only(analyze(world))
    assert (row.cause, row.rule, row.status_code) == ("grant_not_active", "check_outside_grant", c.PERMISSION_DENIED)
    assert row.evidence["grant_id"] == "g7" and row.evidence["grant_start"] == T0 + 1000


def test_policy_version_skew():
    world, token = healthy_world()  # alice is allowed Read under v1 ...
    world.call(T0 + 20, token, policy_version="v2", policy_decision="deny")  # ... and denied under v2 next to it
    row = only(analyze(world))
    assert (row.cause, row.rule) == ("policy_version_skew", "allowed_under_other_version")
    assert row.evidence["policy_version"] == "v2" and row.evidence["allowed_versions"] == ["v1"]
    assert row.principal == "alice"


def test_policy_mismatch():
    world, token = healthy_world()
    world.call(T0 + 20, token, method="Write", required="orders.write", granted=["orders.read"])
    row = only(analyze(world))
    assert (row.cause, row.rule) == ("policy_mismatch", "permission_not_granted")
    assert row.evidence["required"] == "orders.write" and row.evidence["granted"] == ["orders.read"]
    assert row.method == "Write"


def test_unexplained_names_what_is_missing():
    world, token = healthy_world()
    world.call(T0 + 20, token, method="Write", required="orders.write", server_traced=False,
               client_instrumented=False)
    row = only(analyze(world))
    assert (row.cause, row.rule, row.confidence) == ("unexplained", "undecided", 0)
    assert "server span (server not traced)" in row.evidence["missing"]
    assert "server not traced" in row.fix


def test_client_only_evidence_lowers_confidence():
    world, token = healthy_world()
    world.call(T0 + 20, None, server_traced=False)
    row = only(analyze(world))
    assert row.cause == "token_missing" and row.span_id == world.rows[-1]["span_id"]
    assert row.confidence < 0.9 and "server span (server not traced)" in row.evidence["missing"]


def test_no_issuer_spans_falls_back_to_consensus_with_lower_confidence():
    world = World(offsets={"server-host": 120.0})
    tok = Token(iat=T0, exp=T0 + 300, jti="t1")
    for i in range(3):
        world.call(T0 + 1 + i, tok)
    world.call(T0 + 250, tok)
    df = analyze(world)
    row = only(df)
    assert "issuer spans (offsets are relative to the consensus of all clocks)" in row.evidence["missing"]
    assert row.evidence["offset_reference"] == "consensus"
    assert row.confidence < 0.85


def test_leeway_setting_absorbs_a_small_skew():
    # the verifier accepts 30 s of leeway: a server 20 s ahead is within it, so a denial there is not drift
    world, _ = healthy_world({"server-host": 20.0}, leeway_s=30.0)
    tok = Token(iat=T0, exp=T0 + 300)
    world.issue(tok, T0)
    world.call(T0 + 340, tok)  # expired by 40 s in true time, beyond the leeway
    row = only(analyze(world, jitrace_leeway_s=30.0))
    assert row.cause == "token_expired" and row.evidence["leeway_s"] == 30.0


def test_plain_spans_without_jit_attributes_get_offsets_and_a_denial_list():
    world = World(offsets={"server-host": 3.0}, issuer=None)
    for i in range(4):
        world.call(T0 + i, None, client_instrumented=False, server_instrumented=False)
    con = session.connect()
    world.load(con)
    session.run_queries(con)
    df = con.execute("SELECT cause, status_code FROM attributions").df()
    assert len(df) == 4 and set(df["cause"]) == {"unexplained"} and set(df["status_code"]) == {16}
    offs = con.execute("SELECT domain, offset_s, reference FROM clock_offsets ORDER BY domain").fetchall()
    assert [d for d, _, _ in offs] == ["client-host", "server-host"]
    assert offs[1][1] - offs[0][1] == pytest.approx(3.0, abs=0.002) and offs[0][2] == "consensus"


def test_logs_of_the_denied_call_are_evidence():
    world, _ = healthy_world()
    call = world.call(T0 + 10, None)
    con = session.connect()
    world.load(con)
    t = call["trace_id"]
    con.execute(
        "INSERT INTO logs (time_ns, observed_ns, trace_id, span_id, severity_number, body, service) VALUES "
        "(2, 2, ?, ?, 13, 'no authorization header', 'orders'), (1, 1, ?, NULL, 9, 'call arrived', 'orders'), "
        "(3, 3, 'ffffffffffffffffffffffffffffffff', NULL, 9, 'another call', 'orders')",
        [t, call["server"]["span_id"], t],
    )
    session.run_queries(con)
    (evidence,) = con.execute("SELECT evidence FROM attributions").fetchone()
    ev = json.loads(evidence)
    # lines: time (UTC), service, severity, body; the other trace's line is not there
    assert ev["logs"] == ["1970-01-01T00:00:00.000Z orders INFO call arrived",
                          "1970-01-01T00:00:00.000Z orders WARN no authorization header"] and ev["log_count"] == 2


@settings(max_examples=40, deadline=None)
@example(skew=1.0, ttl=0.015625)  # fewer seconds left than the offset's bound: undecided (found by this test)
@given(
    # below the healthy token's 3600 s life: the healthy calls that estimate the clocks must stay allowed
    skew=st.one_of(st.floats(0.05, 3000.0), st.floats(-3000.0, -0.05)),
    ttl=st.one_of(st.floats(-3600.0, -0.01), st.floats(0.01, 3600.0)),
)
def test_a_skewed_server_clock_is_blamed_exactly_when_it_flipped_the_verdict(skew, ttl):
    # the token has `ttl` seconds left in true time when sent; the server's clock is `skew` seconds off. A cause that
    # rests on the clock model is given only when it holds over the offset's whole bound (docs/contract.md)
    world, _ = healthy_world({"server-host": skew})
    tok = Token(iat=T0 - 7200, exp=T0 + 100 + ttl)
    world.issue(tok, T0 + 50)
    call = world.call(T0 + 100, tok)
    df = analyze(world)
    if call["status"] == 0:
        assert df.empty  # healthy calls are never reported
    elif ttl > 0:
        row = only(df)  # valid in true time: only the server's clock made it expire
        ev = row.evidence
        assert ev["server_offset_lower_s"] <= skew <= ev["server_offset_upper_s"]  # the bound holds the truth
        if ev["ttl_at_check_true_s"] > ev["server_offset_error_s"]:  # the flip holds over the offset's whole bound
            assert (row.cause, ev["drifting_host"]) == ("clock_drift", "server-host")
            assert ev["server_offset_s"] == pytest.approx(skew, abs=0.002)
        else:  # a token left less time than the offset's bound: not proven, and the answer says why
            assert row.cause == "unexplained" and ev["offset_uncertain"]
    else:
        assert only(df).cause == "token_expired"  # expired in true time before it was sent


def test_version_skew_needs_the_allowed_call_near_in_time():
    world, token = healthy_world()  # alice allowed under v1 at T0+1..T0+5
    world.call(T0 + 400, token, policy_version="v2", policy_decision="deny")  # 395 s later: not "near"
    world.call(T0 + 200, token, policy_version="v2", policy_decision="deny")  # 195 s later: near
    df = analyze(world, jitrace_version_window_s=300).sort_values("time")
    # the far one: the policy said no although the permission is granted, and no other version allowed it nearby
    assert list(df["cause"]) == ["policy_version_skew", "unexplained"]


def test_token_expired_in_flight_on_a_stream():
    # a watch stream: its first message checks fine, a later one finds the token expired (span event)
    world, _ = healthy_world()
    tok = Token(iat=T0, exp=T0 + 300)
    world.issue(tok, T0)
    call = world.call(T0 + 299, tok, method="Watch", stream_checks=(0.4, 0.8, 1.2))
    assert call["status"] == c.UNAUTHENTICATED
    row = only(analyze(world))
    assert (row.cause, row.rule) == ("token_expired_in_flight", "expired_in_flight")
    ev = row.evidence
    assert ev["late_stream_check"] is True and ev["stream_checks"] == 3 and ev["verdict"] == "expired"
    assert ev["ttl_at_check_true_s"] == pytest.approx(-0.201, abs=0.003)
    assert ev["ttl_at_send_true_s"] == pytest.approx(1.0, abs=0.003)


def test_clock_drift_names_the_issuer_when_it_alone_is_off():
    # the issuer's clock is 20 s behind everyone: its tokens expire 20 s early on every correct server
    world, _ = healthy_world({"issuer": -20.0})
    tok = Token(iat=T0 - 20, exp=T0 + 10)  # minted at true T0 with a 30 s lifetime, in the issuer's clock
    world.issue(tok, T0)
    world.call(T0 + 15, tok)
    row = only(analyze(world))
    assert (row.cause, row.rule) == ("clock_drift", "server_clock_expired_flip")
    assert row.evidence["drifting_host"] == "issuer" and "host issuer" in row.fix
    assert row.evidence["server_offset_s"] == pytest.approx(20.0, abs=0.002)


def test_big_inputs_run_the_per_span_steps_as_plain_tables(monkeypatch, tmp_path):
    world, _ = healthy_world()
    world.call(T0 + 10, None)
    temp_steps = {s.name for s in pipeline.steps() if s.stored == "temp"}
    for big, where in ((False, {"temp"}), (True, {"jitrace"})):
        monkeypatch.setattr(session, "TEMP_SPANS_PER_GB", 1 if big else session.TEMP_SPANS_PER_GB)
        con = session.connect(tmp_path / f"big-{big}.duckdb")  # a file: in memory both are alike
        world.load(con)
        session.run_queries(con)
        assert [r[0] for r in con.execute("SELECT cause FROM attributions").fetchall()] == ["token_missing"]
        stored = {r[0] for r in con.execute("SELECT database_name FROM duckdb_tables() WHERE table_name IN "
                                            "(SELECT unnest(?::VARCHAR[]))", [sorted(temp_steps)]).fetchall()}
        assert stored == where
        con.close()


@settings(max_examples=15, deadline=None)
@given(server_skew=st.floats(-600, 600), client_skew=st.floats(-600, 600), server_traced=st.booleans())
def test_a_denial_is_placed_in_the_reference_clock_not_in_its_hosts(server_skew, client_skew, server_traced):
    # `time` is when the denial happened by the issuer's clock (the report plots it); host_time is the reporting
    # host's own reading, off by that host's skew
    world, token = healthy_world({"server-host": server_skew, "client-host": client_skew}, calls=8)
    sent_true = T0 + 100
    world.call(sent_true, None, server_traced=server_traced)
    row = only(analyze(world))
    skew = server_skew if server_traced else client_skew
    started_true = sent_true + (0.001 if server_traced else 0.0)  # the server span starts one transit later
    assert row.time.timestamp() == pytest.approx(started_true, abs=0.005)
    assert row.host_time.timestamp() == pytest.approx(started_true + skew, abs=0.005)


# Skews within +-3000 s: healthy_world's token lives 3600 s, and a server clock 3595 s ahead saw it expire during
# the healthy calls (hypothesis found it); the denied call, 4000 s on, is past exp (300 s) wherever the clocks are.
@settings(max_examples=15, deadline=None)
@given(server_skew=st.floats(-3000.0, 3000.0), client_skew=st.floats(-3000.0, 3000.0))
def test_evidence_seconds_carry_no_float_noise(server_skew, client_skew):
    """Seconds in the evidence are rounded to the nanosecond (the spans' resolution): a reader sees 0.06, not the
    0.05999999999999992 that subtracting offsets leaves."""
    world, _ = healthy_world({"server-host": server_skew, "client-host": client_skew})
    tok = Token(iat=T0, exp=T0 + 300)
    world.issue(tok, T0)
    world.call(T0 + 4000, tok)  # expired wherever the clocks are: a denial with every ttl and offset member
    ev = only(analyze(world)).evidence
    seconds = {k: v for k, v in ev.items() if isinstance(v, float)}
    assert {"server_offset_s", "ttl_at_check_s", "ttl_at_check_true_s", "check_time_s"} <= set(seconds)
    for key, value in seconds.items():
        assert round(value, 9) == value, (key, value)
