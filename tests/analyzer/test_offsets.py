"""Clock offsets: estimates within 2 ms of an injected skew, through the graph of hosts, per time window, and on
Zipkin's own clock-skew fixture the number Zipkin's and Jaeger's skew adjusters compute."""

from __future__ import annotations

import json

import pytest
from fresh_process import analysis_in_fresh_process
from hypothesis import given, settings
from hypothesis import strategies as st
from spanfactory import T0, Token, World

from jitrace.analyzer.steps import offsets as solver
from jitrace.analyzer.steps import session

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


def test_a_time_without_the_issuer_is_tied_to_it_through_its_pairs_with_a_wider_bound():
    world = World(offsets={"server-host": -30.0, "client-host": 2.0})
    tok = Token(iat=T0, exp=T0 + 7200)
    world.issue(tok, T0)
    world.call(T0 + 1, tok)
    world.call(T0 + 900, tok)  # 15 minutes later, no issuer call
    con = session.connect()
    world.load(con)
    session.run_queries(con)
    (ref, off, err, lower, upper), = con.execute(
        "SELECT reference, offset_s, error_s, lower_s, upper_s FROM clock_offsets WHERE domain = 'server-host'"
    ).fetchall()
    assert ref == "issuer" and round(off, 3) == -30.0 and lower <= -30.0 <= upper
    # the client/issuer pair was seen once: 15 minutes away its offset may have drifted by the largest rate
    assert err == pytest.approx(900 * solver.MAX_RATE, rel=0.05)


def test_lowest_delay_and_intersected_bounds_resist_a_queued_sample():
    world = World(offsets={"server-host": 5.0})
    tok = Token(iat=T0, exp=T0 + 3600)
    world.issue(tok, T0)
    world.call(T0 + 1, tok, transit_s=0.0005, in_band=False)
    world.call(T0 + 2, tok, transit_s=0.4, return_s=0.0005, in_band=False)  # 400 ms stuck on the way there
    (_, _, off, err, n), = offsets(world)["server-host"]
    assert off == pytest.approx(5.0, abs=0.001) and n == 2
    # the queued call's bound [t3 - t4, t2 - t1] is wide, the quick call's is +-0.5 ms: the fit keeps to the
    # tightest; the bound adds the issuer link's +-1 ms (a 2 ms round trip) and the drift room of the second
    # between the issuer's call and these
    assert abs(off - 5.0) <= err <= 0.004


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
    # the causality bound [t3 - t4, t2 - t1] of that one pair is what the bound is
    (width,) = con.execute("SELECT hi_s - lo_s FROM clock_edges").fetchone()
    assert width * 1e6 == pytest.approx(-65441 - (-66403), abs=1)
    (lower, upper), = con.execute("SELECT lower_s, upper_s FROM clock_offsets WHERE domain = ?",
                                  [server_domain]).fetchall()
    assert lower <= off[server_domain] <= upper


@st.composite
def clock_graphs(draw):
    """A connected graph of hosts with known constant offsets (up to an hour) and buckets of constraints around the
    truth whose widths span 1 us to 100 ms (clock_edges rows: domain_a < domain_b, b - a in [lo, hi])."""
    n = draw(st.integers(2, 12))
    truth = {f"h{i:02d}": draw(st.floats(-3600.0, 3600.0)) for i in range(n)}
    hosts = list(truth)
    pairs = [(hosts[i], hosts[draw(st.integers(0, i - 1))]) for i in range(1, n)]  # a spanning tree: connected
    pairs += draw(st.lists(st.tuples(st.sampled_from(hosts), st.sampled_from(hosts)).filter(lambda p: p[0] != p[1]),
                           max_size=2 * n))
    edges = []
    for x, y in pairs:
        a, b = min(x, y), max(x, y)
        for t in draw(st.lists(st.floats(0.0, 600.0), min_size=1, max_size=5)):
            below, above = draw(st.floats(1e-6, 0.1)), draw(st.floats(1e-6, 0.1))
            d = truth[b] - truth[a]
            edges.append((a, b, d - below, T0 + t + 0.002, d + above, T0 + t, 5))
    return truth, edges


@settings(max_examples=60, deadline=None)
@given(graph=clock_graphs())
def test_the_solver_keeps_the_truth_inside_every_bound(graph):
    truth, edges = graph
    rows = solver.solve(edges, "h00")
    assert {r[0] for r in rows} == set(truth)
    for domain, ref, start, end, off, err, n, lower, upper, rate in rows:
        true = truth[domain] - truth["h00"]
        assert ref == "h00" and start <= end and n > 0
        assert lower - 1e-6 <= true <= upper + 1e-6  # the bound holds (to the float precision of an hour's offsets)
        assert lower - 1e-6 <= off <= upper + 1e-6 and err == pytest.approx(max(off - lower, upper - off))
        if domain == "h00":
            assert (off, lower, upper, rate) == (0.0, 0.0, 0.0, 0.0)
        else:
            assert upper > lower  # only the reference has a zero bound


def test_without_issuer_spans_the_reference_is_the_median_clock():
    """Nine hosts agree, one is 50 ms off: the consensus sits with the nine (a mean would move them by 5 ms), and no
    host has a zero bound."""
    truth = {f"h{i}": 0.0 for i in range(9)} | {"h9": 0.05}
    edges = [(min(a, b), max(a, b), truth[max(a, b)] - truth[min(a, b)] - 1e-4, T0 + 1.0,
              truth[max(a, b)] - truth[min(a, b)] + 1e-4, T0 + 1.0, 3)
             for a in truth for b in truth if a < b]
    rows = {r[0]: r for r in solver.solve(edges, None)}
    assert {r[1] for r in rows.values()} == {solver.CONSENSUS}
    for domain, row in rows.items():
        assert row[4] == pytest.approx(truth[domain], abs=3e-4)
        assert row[8] > row[7]


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
