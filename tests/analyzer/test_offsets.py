"""Clock offsets: estimates within 2 ms of an injected skew, through the graph of hosts, per time window, and on
Zipkin's own clock-skew fixture the number Zipkin's and Jaeger's skew adjusters compute."""

from __future__ import annotations

import json

import pytest
from fresh_process import analysis_in_fresh_process
from hypothesis import given, settings
from hypothesis import strategies as st
from spanfactory import T0, Token, World

from jitrace.analyzer import session

skews = st.one_of(st.floats(0.05, 3600.0), st.floats(-3600.0, -0.05))
transit = st.floats(0.0001, 0.003)


def offsets(world: World, **kw: float) -> dict[str, list[tuple]]:
    con = session.connect()
    world.load(con)
    session.run_queries(con, settings=kw)
    out: dict[str, list[tuple]] = {}
    for domain, ref, start, off, err, n in con.execute(
        "SELECT domain, reference, window_start, offset_s, error_s, samples FROM clock_offsets ORDER BY window_start"
    ).fetchall():
        out.setdefault(domain, []).append((ref, start, off, err, n))
    return out


@settings(max_examples=25, deadline=None)
@given(server_skew=skews, client_skew=skews, ways=st.lists(st.tuples(transit, transit), min_size=3, max_size=12),
       in_band=st.booleans())
def test_offset_within_2ms_of_injected_skew(server_skew, client_skew, ways, in_band):
    world = World(offsets={"server-host": server_skew, "client-host": client_skew})
    tok = Token(iat=T0, exp=T0 + 3600)
    world.issue(tok, T0 + 10)
    for i, (there, back) in enumerate(ways):
        world.call(T0 + 11 + i, tok, transit_s=there, return_s=back, in_band=in_band)
    est = offsets(world)  # windows follow the client's clock, so a skewed client may straddle two
    assert {ref for rows in est.values() for ref, *_ in rows} == {"issuer"}
    for host, skew in (("server-host", server_skew), ("client-host", client_skew)):
        for _, _, off, err, _ in est[host]:
            assert off == pytest.approx(skew, abs=0.002)
            assert abs(off - skew) <= err + 1e-6  # the bound holds


def test_graph_of_hosts_is_solved_relative_to_the_issuer():
    # issuer <- a -> b -> c: c's offset to the issuer needs two hops
    skew = {"a": 0.5, "b": -7.25, "c": 42.0}
    world = World(offsets=skew)
    tok = Token(iat=T0, exp=T0 + 3600)
    world.issue(tok, T0, requester="a")
    for i in range(5):
        world.call(T0 + 1 + i, tok, client="a", server="b", transit_s=0.001 + i * 1e-4)
        world.call(T0 + 1.5 + i, tok, client="b", server="c", return_s=0.002)
    est = offsets(world)
    for host, true in skew.items():
        (ref, _, off, err, n), = est[host]
        assert ref == "issuer" and off == pytest.approx(true, abs=0.002) and n > 0


def test_each_time_window_gets_its_own_estimate():
    world = World(offsets={"server-host": 1.0})
    tok = Token(iat=T0, exp=T0 + 7200)
    world.issue(tok, T0)
    for i in range(3):
        world.call(T0 + 1 + i, tok)
    world.offsets["server-host"] = 1.5  # drifted half a second ten minutes later
    world.issue(tok, T0 + 600)
    for i in range(3):
        world.call(T0 + 601 + i, tok)
    est = [(off) for _, _, off, _, _ in offsets(world, jitrace_window_s=300)["server-host"]]
    assert est == [pytest.approx(1.0, abs=0.002), pytest.approx(1.5, abs=0.002)]


def test_a_window_without_the_issuer_is_tied_to_it_through_the_nearest_window():
    world = World(offsets={"server-host": -30.0, "client-host": 2.0})
    tok = Token(iat=T0, exp=T0 + 7200)
    world.issue(tok, T0)
    world.call(T0 + 1, tok)
    world.call(T0 + 900, tok)  # three windows later, no issuer call
    est = offsets(world)
    assert [(ref, round(off, 3)) for ref, _, off, _, _ in est["server-host"]] == [("issuer", -30.0)] * 2


def test_lowest_delay_and_intersected_bounds_resist_a_queued_sample():
    world = World(offsets={"server-host": 5.0})
    tok = Token(iat=T0, exp=T0 + 3600)
    world.issue(tok, T0)
    world.call(T0 + 1, tok, transit_s=0.0005, in_band=False)
    world.call(T0 + 2, tok, transit_s=0.4, return_s=0.0005, in_band=False)  # 400 ms stuck on the way there
    (_, _, off, err, n), = offsets(world)["server-host"]
    assert off == pytest.approx(5.0, abs=0.001) and n == 2
    # the queued call's bound [t3 - t4, t2 - t1] is wide, the quick call's is +-0.5 ms: their intersection wins;
    # the error adds the issuer link's +-1 ms (a 2 ms round trip) in quadrature
    assert err == pytest.approx((0.0005**2 + 0.001**2) ** 0.5, abs=1e-5)


def _zipkin_rows(path) -> list[dict]:
    """A tiny Zipkin v2 reader (timestamps in microseconds), enough for one fixture."""
    rows = []
    for s in json.loads(path.read_text()):
        start = s["timestamp"] * 1000
        service = s["localEndpoint"]["serviceName"]
        rows.append({
            "trace_id": s["traceId"].rjust(32, "0"), "span_id": s["id"], "parent_span_id": s.get("parentId"),
            "name": s["name"], "kind": s.get("kind", "INTERNAL"), "start_ns": start,
            "end_ns": start + s.get("duration", 0) * 1000, "status_code": "UNSET", "status_message": None,
            "service": service, "resource": json.dumps({"service.name": service}),
            "attributes": "{}", "events": "[]", "links": "[]", "scope": None, "source": str(path),
        })
    return rows


def test_zipkin_skew_fixture_gives_zipkins_and_jaegers_offset(real_data):
    # Zipkin (zipkin-lens clock-skew.js getClockSkew): latency = (clientDuration - serverDuration) / 2 and
    # skew = serverTimestamp - latency - clientTimestamp. Jaeger (model/adjuster/clockskew.go calculateSkew):
    # delta = parentStart + latency - childStart, added to the server. Both: server clock - client clock =
    # 8761 - (94539 - 93577) / 2 - 74202 = -65922 us.
    client_ts, client_dur, server_ts, server_dur = 1470150004074202, 94539, 1470150004008761, 93577
    latency = (client_dur - server_dur) / 2
    zipkin_skew_us = server_ts - latency - client_ts
    jaeger_delta_us = client_ts + latency - server_ts
    assert zipkin_skew_us == -jaeger_delta_us == -65922

    from jitrace.analyzer.load import load_into

    con = session.connect()
    load_into(con, [str(real_data / "skew.json")])
    session.run_queries(con)
    (client_domain, server_domain), = con.execute("SELECT client_domain, server_domain FROM pairs").fetchall()
    off = dict(con.execute("SELECT domain, offset_s FROM clock_offsets").fetchall())
    assert (off[server_domain] - off[client_domain]) * 1e6 == pytest.approx(zipkin_skew_us, abs=1)
    # the causality bound [t3 - t4, t2 - t1] of that one pair is what the error is
    (err,) = con.execute("SELECT error_s FROM clock_edges").fetchone()
    assert err * 1e6 == pytest.approx((-65441 - (-66403)) / 2, abs=1)


@st.composite
def clock_graphs(draw):
    """A connected graph of hosts with known offsets and edges whose errors span 1 µs to 100 ms (weights 1e12 to
    1e2): what made the normal equations lose milliseconds. Edges agree exactly, so the solution is the truth."""
    n = draw(st.integers(2, 24))
    truth = {f"h{i}": draw(st.floats(-3600.0, 3600.0)) for i in range(n)}
    hosts = list(truth)
    pairs = [(hosts[i], hosts[draw(st.integers(0, i - 1))]) for i in range(1, n)]  # a spanning tree: connected
    pairs += draw(st.lists(st.tuples(st.sampled_from(hosts), st.sampled_from(hosts)).filter(lambda p: p[0] != p[1]),
                           max_size=3 * n))
    edges = [(0.0, 300.0, c, s, truth[s] - truth[c], draw(st.floats(1e-6, 0.1)), 5) for c, s in pairs]
    return truth, edges


@settings(max_examples=60, deadline=None)
@given(graph=clock_graphs())
def test_the_solver_recovers_consistent_offsets_in_python_and_with_numpy(graph):
    from jitrace.analyzer import offsets as solver

    truth, edges = graph
    reference = "h0"
    by_python = {row[0]: row for row in solver.solve(edges, reference)}
    saved = solver.PYTHON_WORK
    solver.PYTHON_WORK = -1  # every problem to numpy
    try:
        by_numpy = {row[0]: row for row in solver.solve(edges, reference)}
    finally:
        solver.PYTHON_WORK = saved
    assert set(by_python) == set(by_numpy) == set(truth)
    for host, true in truth.items():
        offset, error = by_python[host][4], by_python[host][5]
        assert offset == pytest.approx(true - truth[reference], abs=1e-7)
        # numpy's SVD-based lstsq is the less exact of the two (about 1e-7 s off the truth on such graphs)
        assert by_numpy[host][4] == pytest.approx(true - truth[reference], abs=1e-5)
        assert error == pytest.approx(by_numpy[host][5], rel=1e-5, abs=1e-12)
        assert by_python[host][1] == "h0"


def test_an_analysis_imports_no_numpy(tmp_path):
    """Importing numpy is 0.07 s of CPU; the offsets of a few dozen hosts are solved without it."""
    world = World(offsets={"server-host": 0.25})
    tok = Token(iat=T0, exp=T0 + 3600)
    world.issue(tok, T0)
    for i in range(5):
        world.call(T0 + 1 + i, tok)
    con = session.connect()
    world.load(con)
    con.execute(f"COPY span_rows TO '{tmp_path / 'spans.parquet'}' (FORMAT parquet)")
    summary, imported = analysis_in_fresh_process(tmp_path / "spans.parquet", tmp_path / "out", ("numpy",))
    assert summary["clock_domains"] >= 2 and not imported
