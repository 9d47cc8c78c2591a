"""The SQL steps: documented, in pipeline order, in step with the span contract, runnable from DuckDB alone,
pairing client and server spans the ways real tracers record them, and selecting denials by gRPC status."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spanfactory import T0, Token, World

from jitrace.analyzer import session
from jitrace.instrumentation import contract as c


def sql_text() -> str:
    """Every step and the span facts rule they read through (queries/span_facts.sql)."""
    facts = session.query_files()[0].with_name("span_facts.sql")
    return "\n".join(p.read_text() for p in [facts, *session.query_files()])


def test_every_step_is_numbered_documented_and_named_for_the_table_it_produces():
    files = session.query_files()
    assert [p.name[:2] for p in files] == sorted(p.name[:2] for p in files)
    for p in files:
        text = p.read_text()
        lines = text.splitlines()
        assert re.fullmatch(r"\d\d_\w+\.sql", p.name), p.name
        assert lines[0].startswith(f"-- {p.stem}: reads "), p.name
        assert "produces" in lines[0] + lines[1] and any(line.startswith("-- Why") for line in lines), p.name
        made = re.findall(r"CREATE (?:OR REPLACE )?(?:TEMP )?(?:TABLE|VIEW) (?:IF NOT EXISTS )?(?:main\.)?(\w+)", text)
        produced = p.stem[3:]
        # one table, and any helper relation it is built from carries its name (20_pairs: pairs_matched)
        assert produced in made and all(name.startswith(produced) for name in made), (p.name, made)


def test_queries_read_every_contract_attribute_and_no_unknown_jit_name():
    text = sql_text()
    known = set(c.all_attributes()) | {c.ISSUE_SPAN_NAME, c.TOKEN_CHECK_EVENT}
    for name in c.all_attributes():
        assert f'"{name}"' in text, f"{name} is not read by queries/"
    used = set(re.findall(r"jit\.[a-z_]+(?:\.[a-z_]+)*", text))
    assert used <= known, f"unknown jit.* names in queries/: {sorted(used - known)}"


def test_attributes_become_the_contract_columns():
    con = session.connect()
    session.run_queries(con)
    cols = {r[0] for r in con.execute("DESCRIBE rpc_spans").fetchall()}
    assert {c.column(a) for a in c.all_attributes()} <= cols


def _world_with_denials() -> World:
    world = World(offsets={"server-host": 120.0, "client-host": -0.25})
    tok = Token(iat=T0, exp=T0 + 300)
    world.issue(tok, T0)
    for i in range(4):
        world.call(T0 + 1 + i, tok)
    world.call(T0 + 250, tok)  # clock drift on the server
    world.call(T0 + 20, None)  # no token
    world.call(T0 + 30, tok, required="orders.write")  # policy mismatch
    return world


def test_steps_run_from_duckdb_alone_and_agree_with_the_python_solver():
    world = _world_with_denials()
    full = session.connect()
    world.load(full)
    session.run_queries(full)
    plain = session.connect()
    world.load(plain)
    for p in session.query_files():  # no Python step: 45_clock_offsets stands in for the graph solver
        plain.execute(p.read_text())
    q = "SELECT trace_id, cause, rule FROM attributions ORDER BY trace_id"
    assert plain.execute(q).fetchall() == full.execute(q).fetchall()
    assert [r[1] for r in full.execute(q).fetchall()].count("clock_drift") == 1
    # the issuer's window: the same offsets (the Python solver also carries them into the issuer-less window)
    q = ("SELECT domain, round(offset_s, 4) FROM clock_offsets "
         "WHERE window_start = (SELECT min(window_start) FROM clock_offsets) ORDER BY ALL")
    assert plain.execute(q).fetchall() == full.execute(q).fetchall()


def _span(trace, span, parent, kind, service, start, end, attrs=None, status="UNSET"):
    return {"trace_id": trace, "span_id": span, "parent_span_id": parent, "name": "svc/M", "kind": kind,
            "start_ns": start, "end_ns": end, "status_code": status, "status_message": None, "service": service,
            "resource": json.dumps({"service.name": service}), "attributes": json.dumps(attrs or {}),
            "events": "[]", "links": "[]", "scope": None, "source": "t"}


def _run(rows: list[dict]):
    import pyarrow as pa

    from jitrace.analyzer.schema import SPANS, arrow

    con = session.connect()
    batch = pa.Table.from_pylist(rows, schema=arrow(SPANS))  # noqa: F841
    con.execute("INSERT INTO span_rows SELECT * FROM batch")
    session.run_queries(con)
    return con


def test_pairs_by_parent_and_by_zipkin_shared_span_id():
    t = "ab" * 16
    con = _run([
        _span(t, "c1", None, "CLIENT", "a", 1, 100),  # (a time of 0 is OpenTelemetry's "not set")
        _span(t, "s1", "c1", "SERVER", "b", 10, 90),  # OpenTelemetry: the server's parent is the client
        _span(t, "c2", "c1", "CLIENT", "a", 200, 300),
        _span(t, "c2", "c1", "SERVER", "c", 210, 290),  # Zipkin shared span: one id for both sides
        _span(t, "s3", "zz", "SERVER", "b", 400, 500),  # its client was not traced
    ])
    query = "SELECT client_span_id, server_span_id, t1, t2, t3, t4 FROM pairs ORDER BY t1"
    got = con.execute(query).fetchall()
    assert got == [("c1", "s1", 1, 10, 90, 100), ("c2", "c2", 200, 210, 290, 300)]
    assert "pairs" in session.keep_as_views(con)  # notebooks read the view, once the run's table is gone: same pairs
    assert con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'pairs' "
                       "AND table_schema = 'main' AND table_catalog = current_database()").fetchall() == [("VIEW",)]
    database = con.execute("SELECT current_database()").fetchone()[0]  # `main.pairs` could name the TEMP table
    assert con.execute(query.replace("FROM pairs", f'FROM "{database}".main.pairs')).fetchall() == got


@pytest.mark.parametrize("client_status", [0, None, 7])
def test_a_denied_call_keeps_its_client_whatever_status_the_client_recorded(client_status):
    # a proxy between them may turn the status, or the client may record none: the denial still has both ends
    t = "ef" * 16
    client = {c.TOKEN_TTL_S: 12.5, c.TOKEN_PRESENT: True}
    if client_status is not None:
        client[c.RPC_GRPC_STATUS_CODE] = client_status
    con = _run([_span(t, "c1", None, "CLIENT", "a", 0, 100, client),
                _span(t, "s1", "c1", "SERVER", "b", 10, 90, {c.RPC_GRPC_STATUS_CODE: 7})])
    got = con.execute("SELECT span_id, server_span_id, client_span_id, has_client, client_ttl_s FROM denials")
    assert got.fetchall() == [("s1", "s1", "c1", True, 12.5)]


@pytest.mark.parametrize(
    ("grpc_status", "span_status", "denied"),
    [(7, "UNSET", True), (16, "UNSET", True), ("7", "UNSET", True), (0, "ERROR", False), (5, "ERROR", False),
     (None, "ERROR", False), (14, "ERROR", False)],
)
def test_denials_are_selected_by_grpc_status_not_span_status(grpc_status, span_status, denied):
    t = "cd" * 16
    attrs = {} if grpc_status is None else {c.RPC_GRPC_STATUS_CODE: grpc_status}
    con = _run([_span(t, "c1", None, "CLIENT", "a", 0, 100, attrs, span_status),
                _span(t, "s1", "c1", "SERVER", "b", 10, 90, attrs, span_status)])
    rows = con.execute("SELECT span_id FROM attributions").fetchall()
    assert rows == ([("s1",)] if denied else [])  # one row per call, the server's span


@pytest.fixture(scope="module")
def one_denied_call():
    """A run whose one denied call (client on host a, server on host b) starts at T0 + 10 s on both clocks."""
    start = int((T0 + 10) * 10**9)
    t = "ab" * 16
    con = _run([_span(t, "c1", None, "CLIENT", "a", start, start + 10**8),
                _span(t, "s1", "c1", "SERVER", "b", start, start + 5 * 10**7, {c.RPC_GRPC_STATUS_CODE: 7})])
    assert con.execute("SELECT server_domain, client_domain FROM denials").fetchall() == [("b", "a")]
    return con, start


@settings(max_examples=60, deadline=None)
@given(server=st.lists(st.integers(-4, 4), min_size=1, max_size=6, unique=True),
       client=st.lists(st.integers(-4, 4), max_size=6, unique=True))
def test_a_denial_takes_each_hosts_offset_from_the_window_its_time_falls_in(one_denied_call, server, client):
    """The window starting last at or before the call (a window starting at the call's very microsecond counts),
    else the host's first window; a host without windows has no offset. Windows start k minutes from the call, in
    any order, and their offset is k seconds (the client's k + 100)."""
    con, start = one_denied_call
    rows = [("b", k, float(k)) for k in server] + [("a", k, k + 100.0) for k in client]
    con.execute("CREATE OR REPLACE TABLE clock_offsets AS SELECT domain, 'b' AS reference, "
                "make_timestamp(?::BIGINT // 1000 + k * 60000000) AS window_start, "
                "make_timestamp(?::BIGINT // 1000 + (k + 1) * 60000000) AS window_end, offset_s, 0.001 AS error_s, "
                "1::BIGINT AS samples FROM (SELECT unnest(?) AS domain, unnest(?) AS k, unnest(?) AS offset_s)",
                [start, start, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]])
    con.execute(next(p for p in session.query_files() if p.stem == "50_denials").read_text())

    def expected(ks: list[int], shift: float) -> float | None:
        if not ks:
            return None
        started = [k for k in ks if k <= 0]
        return (max(started) if started else min(ks)) + shift

    got = con.execute("SELECT server_offset_s, client_offset_s FROM denials").fetchall()
    assert got == [(expected(server, 0.0), expected(client, 100.0))]
