"""The SQL steps: declared in queries/steps.toml with what they read, documented, in step with the span contract,
pairing client and server spans the ways real tracers record them, and selecting denials by gRPC status."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spanfactory import T0, Token, World

from jitrace.analyzer.steps import pipeline, session
from jitrace.instrumentation import contract as c


def _step(name: str) -> pipeline.Step:
    return next(step for step in pipeline.steps() if step.name == name)


def sql_text() -> str:
    """Every step, the macros and the span facts rule they read through (queries/span_facts.sql)."""
    folder = session.resources.files("jitrace.queries")
    return "\n".join([(folder / "span_facts.sql").read_text(), (folder / "span_fact_inputs.sql").read_text(),
                      pipeline.macros(),
                      *(step.query() for step in pipeline.steps() if step.sql)])


def test_every_step_is_declared_documented_and_reads_what_the_manifest_says():
    seeds, steps = pipeline.manifest()
    objects = {*pipeline.INPUTS, *(seed.name for seed in seeds), *(step.name for step in steps)}
    folder = session.resources.files("jitrace.queries") / "steps"
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql")) == \
        sorted(step.sql.removeprefix("steps/") for step in steps if step.sql), "a SQL file no step declares"
    for step in steps:
        if step.sql is None:
            continue
        text = step.query()
        lines = text.splitlines()
        assert lines[0].startswith(f"-- {step.name}: ") and any(line.startswith("-- Why") for line in lines), step
        assert not re.search(r"^\s*(CREATE|SET|INSERT|DELETE)\b", text, re.MULTILINE | re.IGNORECASE), \
            f"{step.sql}: one query; the runner makes the object (steps.toml: stored)"
        code = re.sub(r"'(?:[^']|'')*'", "''", "\n".join(line.split("--", 1)[0] for line in lines))  # no strings
        read = set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", code, re.IGNORECASE)) & objects
        assert read == set(step.reads), f"{step.sql} reads {sorted(read)}, steps.toml says {sorted(step.reads)}"


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


def test_the_clock_model_feeds_the_attributions():
    world = _world_with_denials()
    con = session.connect()
    world.load(con)
    session.run_queries(con)
    causes = [r[0] for r in con.execute("SELECT cause FROM attributions").fetchall()]
    assert causes.count("clock_drift") == 1
    # one segment per host (no clock stepped), each with its offset inside its bound
    rows = con.execute("SELECT domain, offset_s, lower_s, upper_s FROM clock_offsets ORDER BY domain").fetchall()
    truth = {"client-host": -0.25, "issuer": 0.0, "server-host": 120.0}
    assert [r[0] for r in rows] == sorted(truth)
    for domain, off, lower, upper in rows:
        assert off == pytest.approx(truth[domain], abs=0.002) and lower <= truth[domain] <= upper


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
       client=st.lists(st.integers(-4, 4), max_size=6, unique=True), rate_ppm=st.floats(-100, 100))
def test_a_denial_takes_each_hosts_offset_at_its_instant_from_the_segment_holding_it(one_denied_call, server, client,
                                                                                       rate_ppm):
    """Segments start k minutes (reference clock) from the call, in any order, with offset k seconds at their middle
    (the client's k + 100) and a rate. A host's segment holds the readings of its own clock from the segment's start
    (window_start plus the offset there) to the next one's; the first holds earlier ones. The offset is the
    segment's line at the call's instant, and its bound keeps the segment's distances below (1 ms) and above
    (2 ms)."""
    con, start = one_denied_call
    rows = [("b", k, float(k)) for k in server] + [("a", k, k + 100.0) for k in client]
    con.execute("CREATE OR REPLACE TABLE clock_offsets AS SELECT domain, 'b' AS reference, "
                "make_timestamp(?::BIGINT // 1000 + k * 60000000) AS window_start, "
                "make_timestamp(?::BIGINT // 1000 + (k + 1) * 60000000) AS window_end, offset_s, 0.002 AS error_s, "
                "1::BIGINT AS samples, offset_s - 0.001 AS lower_s, offset_s + 0.002 AS upper_s, ? AS rate_ppm "
                "FROM (SELECT unnest(?) AS domain, unnest(?) AS k, unnest(?) AS offset_s)",
                [start, start, rate_ppm, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]])
    con.execute(_step("denials").create(temp_ok=True))
    call = start / 1e9  # both ends' spans start at this reading of their own clock
    base = start // 1000 / 1e6  # window k starts at base + 60 k seconds

    def expected(ks: list[int], shift: float) -> float | None:
        if not ks:
            return None
        rate = rate_ppm * 1e-6
        starts = {k: base + 60 * k + (k + shift) - rate * 30 for k in ks}  # on the host's clock
        held = [k for k in sorted(ks)[1:] if starts[k] <= call]
        k = max(held) if held else min(ks)
        return k + shift + rate * (call - (k + shift) - (base + 60 * k + 30))

    (server_offset, server_lower, server_upper, server_error, client_offset), = con.execute(
        "SELECT server_offset_s, server_lower_s, server_upper_s, server_error_s, client_offset_s FROM denials"
    ).fetchall()
    assert server_offset == pytest.approx(expected(server, 0.0), abs=1e-9)
    assert (server_lower, server_upper, server_error) == pytest.approx(
        (server_offset - 0.001, server_offset + 0.002, 0.002), abs=1e-12)
    want = expected(client, 100.0)
    assert client_offset == (None if want is None else pytest.approx(want, abs=1e-9))
