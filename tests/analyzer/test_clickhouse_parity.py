"""ClickHouse gives DuckDB's answer: the same spans, loaded into ``otel_traces`` in chdb exactly as the OpenTelemetry
Collector's exporter writes them, give the same clock samples, clock offsets, denied calls, denials, attributions
and summaries as the DuckDB steps give on the normalized spans, table by table and value by value (floats exactly,
the evidence as JSON: the same members, in the same order, with the same values).

Worlds from the span factory (every cause, skewed, stepping and drifting clocks, no issuer, settings, log lines,
the old spelling of kinds and statuses, the facts stored by install-facts) and the lab's real services."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from pathlib import Path

import duckdb
import pytest
from otel_exporter import load_otel
from spanfactory import T0, Token, World

from jitrace.analyzer.analyze import ATTRIBUTION_COLUMNS
from jitrace.analyzer.load import load_into
from jitrace.analyzer.steps import session
from jitrace.instrumentation import contract as c

pytestmark = pytest.mark.usefixtures("chdb_installed")

STEP_TABLES = ("clock_edges", "denied_calls")


@pytest.fixture(scope="module")
def chdb(chdb_installed, tmp_path_factory):
    from jitrace.analyzer.engines.clickhouse import ChdbEngine

    engine = ChdbEngine(str(tmp_path_factory.mktemp("chdb")))
    yield engine
    engine.close()


# ---- worlds -----------------------------------------------------------------------------------------------------

HOSTS = {"client-host": -0.3, "client-b": -120.0, "server-host": 120.0, "ok-server": 0.05, "late-server": -60.0}


def every_cause() -> World:
    """One world with a denial of every rule, between hosts whose clocks are off by up to two minutes."""
    world = World(offsets=dict(HOSTS))
    good = Token(iat=T0, exp=T0 + 3600)
    world.issue(good, T0)
    for i in range(4):  # healthy calls over every pair of hosts: the clock graph
        for k, (client, server) in enumerate((("client-host", "server-host"), ("client-host", "ok-server"),
                                              ("client-b", "ok-server"), ("client-host", "late-server"))):
            assert world.call(T0 + 1 + i + 0.01 * k, good, client=client, server=server)["status"] == 0

    def minted(at: float = T0, **kw) -> Token:
        tok = Token(**({"iat": T0, "exp": T0 + 300} | kw))
        world.issue(tok, at)
        return tok

    world.call(T0 + 10, None, server="ok-server")  # verdict_missing
    world.call(T0 + 11, None, server_traced=False, reason=False)  # client_sent_no_token
    world.call(T0 + 12, minted(exp=T0 + 3600, bad="bad_signature"), server="ok-server")  # verdict_invalid
    world.call(T0 + 250, minted(), server="server-host")  # server_clock_expired_flip
    world.call(T0 + 110, minted(iat=T0 + 100, nbf=T0 + 100, exp=T0 + 1000, at=T0 + 100),
               server="late-server")  # server_clock_not_yet_valid_flip
    world.call(T0 + 400, minted(exp=T0 + 3600, grant_id="g1", grant_start=T0, grant_end=T0 + 500),
               server="server-host")  # server_clock_grant_flip
    world.call(T0 + 310, minted(), client="client-b", server="ok-server")  # client_clock_hid_expiry
    world.call(T0 + 320, minted(), server="ok-server")  # expired_before_send
    world.call(T0 + 299.5, minted(), server="ok-server", wait_s=2.0)  # expired_during_wait
    world.call(T0 + 299.9, minted(), server="ok-server", transit_s=0.5)  # expired_in_flight
    world.call(T0 + 299, minted(), server="ok-server", method="Watch", stream_checks=(0.4, 0.8, 1.2))  # a stream
    world.call(T0 + 330, minted(), server="ok-server", client_instrumented=False)  # expired_without_client_ev.
    world.call(T0 + 100, minted(exp=T0 + 3600, grant_id="g7", grant_start=T0 + 1000, grant_end=T0 + 2000),
               server="ok-server")  # check_outside_grant
    world.call(T0 + 20, good, server="ok-server", policy_version="v2", policy_decision="deny")  # version skew
    world.call(T0 + 21, good, server="ok-server", method="Write", required="orders.write")  # permission_not_granted
    world.call(T0 + 22, good, server="ok-server", method="Write", required="orders.write", granted=[])
    world.call(T0 + 23, good, server="ok-server", required=None, policy_decision="deny")  # permission_reason_only
    world.call(T0 + 24, good, server="ok-server", method="Write", required="orders.write", server_traced=False,
               client_instrumented=False)  # undecided
    world.call(T0 + 25, good, server="ok-server", method="Write", required="orders.write",
               server_instrumented=False, reason=False)  # a server without jit attributes
    return world


def no_issuer() -> World:
    """No jit.issue span: offsets relative to the consensus of the clocks; plain spans without jit attributes."""
    world = World(offsets={"server-host": 120.0, "client-host": 2.0}, issuer=None)
    tok = Token(iat=T0, exp=T0 + 300, jti="t1")
    for i in range(3):
        world.call(T0 + 1 + i, tok)
    world.call(T0 + 250, tok)
    for i in range(3):
        world.call(T0 + 30 + i, None, client_instrumented=False, server_instrumented=False)
    return world


def stepping_clocks() -> World:
    """A clock that steps (NTP) and one that drifts: several segments per host in the clock model."""
    world = World(offsets={"server-host": lambda t: 5.0 if t < T0 + 1000 else 7.5,
                           "ok-server": lambda t: 3e-5 * (t - T0), "client-host": 0.2})
    good = Token(iat=T0, exp=T0 + 7200)
    world.issue(good, T0)
    for i in range(40):
        for server in ("server-host", "ok-server"):
            world.call(T0 + 1 + 50 * i, good, server=server)
    for at in (T0 + 500, T0 + 1500):
        tok = Token(iat=at - 290, exp=at + 6)
        world.issue(tok, at - 290)
        world.call(at, tok, server="server-host")  # expired by the stepped clock only after the step
        world.call(at + 1, tok, server="ok-server", wait_s=10)
    return world


def skewed(server_skew: float, client_skew: float, issuer_skew: float) -> World:
    world = World(offsets={"server-host": server_skew, "client-host": client_skew, "issuer": issuer_skew})
    good = Token(iat=T0, exp=T0 + 3600)
    world.issue(good, T0)
    for i in range(8):
        world.call(T0 + 1 + i, good)
    for ttl in (-30.0, -0.5, 0.5, 30.0):
        tok = Token(iat=T0 - 7200, exp=T0 + 100 + ttl)
        world.issue(tok, T0 + 50)
        world.call(T0 + 100, tok)
    world.call(T0 + 4000, Token(iat=T0, exp=T0 + 300, jti="old"))
    world.call(T0 + 150, None, server_traced=False)
    return world


def spans_in(world: World) -> list[dict]:
    return world.rows


def logs_of(world: World) -> list[dict]:
    """Log lines of the world's denied calls: on their spans, on their trace only, on another trace, and one
    without ids beside a denial (joined by service and time)."""
    denied = [r for r in world.rows if r["kind"] == "SERVER" and json.loads(r["attributes"]).get(
        c.RPC_GRPC_STATUS_CODE) in (7, 16)]
    rows = []
    for i, span in enumerate(denied[:6]):
        base = {"observed_ns": None, "severity_text": None, "resource": json.dumps({"service.name": "orders"}),
                "attributes": "{}", "scope": "app", "source": "test", "service": "orders"}
        rows.append(base | {"time_ns": span["start_ns"] + 1000, "trace_id": span["trace_id"],
                            "span_id": span["span_id"], "severity_number": 13,
                            "body": ["token expired at the check", "no authorization header",
                                     "role viewer may not write", "grant not active", "policy v2 said no",
                                     "something else"][i]})
        rows.append(base | {"time_ns": span["start_ns"] + 2000, "trace_id": span["trace_id"], "span_id": None,
                            "severity_number": 9, "body": f"call {i} arrived"})
    servers = {r["trace_id"] for r in world.rows if r["kind"] == "SERVER"}
    for span in world.rows:  # a denial no span rule decides (no server span, no jit facts): its line decides
        if span["kind"] == "CLIENT" and span["trace_id"] not in servers and c.TOKEN_PRESENT not in span["attributes"]:
            rows.append({"time_ns": span["start_ns"] + 500, "observed_ns": None, "trace_id": span["trace_id"],
                         "span_id": span["span_id"], "severity_number": 17, "severity_text": None,
                         "body": "jwt has expired", "service": "frontend", "scope": "app", "source": "test",
                         "resource": json.dumps({"service.name": "frontend"}), "attributes": "{}"})
    rows.append({"time_ns": denied[0]["start_ns"] - 500_000_000, "observed_ns": None, "trace_id": None,
                 "span_id": None, "severity_number": 17, "severity_text": "ERROR",
                 "body": "access denied: missing token", "service": "orders",
                 "resource": json.dumps({"service.name": "orders"}), "attributes": "{}",
                 "scope": "app", "source": "test"})
    rows.append({"time_ns": denied[0]["start_ns"], "observed_ns": None, "trace_id": "f" * 32, "span_id": None,
                 "severity_number": 9, "severity_text": None, "body": "another call", "service": "orders",
                 "resource": json.dumps({"service.name": "orders"}), "attributes": "{}", "scope": "app",
                 "source": "test"})
    return rows


# ---- the two runs -----------------------------------------------------------------------------------------------


def duckdb_run(spans: list[dict], logs: list[dict], settings: dict[str, float] | None) -> duckdb.DuckDBPyConnection:
    import pyarrow as pa

    from jitrace.analyzer.schema import LOGS, SPANS, arrow

    con = session.connect()
    arrow_spans = pa.Table.from_pylist(spans, schema=arrow(SPANS))  # noqa: F841 (read by DuckDB by name)
    con.execute("INSERT INTO span_rows SELECT * FROM arrow_spans")
    if logs:
        log_rows = pa.Table.from_pylist([{k: r.get(k) for k in LOGS.names} for r in logs],  # noqa: F841
                                        schema=arrow(LOGS))
        con.execute("INSERT INTO logs SELECT * FROM log_rows")
    session.run_queries(con, settings=settings)
    return con


def clickhouse_run(chdb, name: str, spans: list[dict], logs: list[dict], settings: dict[str, float] | None, *,
                   stored: bool = False, old_spelling: bool = False, drop: tuple[str, ...] = ()
                   ) -> duckdb.DuckDBPyConnection:
    from jitrace.analyzer.engines import otel_traces
    from jitrace.analyzer.engines.clickhouse import Source
    from jitrace.analyzer.engines.run import PULLED, Run

    load_otel(chdb, name, spans, logs, old_spelling=old_spelling)
    if stored:
        otel_traces.install_facts(chdb, name, "otel_traces")
        for column in drop:  # as a table given its facts by an older jitrace, before these were facts
            chdb.run(f"ALTER TABLE `{name}`.otel_traces DROP COLUMN {column}")
        assert otel_traces.check(chdb, name, "otel_traces") == set(otel_traces.fact_names()) - set(drop)
        stored = not drop
    starts = [s["start_ns"] for s in spans if s["start_ns"]]
    local = session.connect()
    session.load_log_patterns(local)
    patterns = local.execute("SELECT ordinal, name, pattern, cause, confidence, description, source "
                             "FROM log_patterns ORDER BY ordinal").fetchall()
    run = Run(chdb, Source("chdb", name, "otel_traces", "otel_logs" if logs else None),
              min(starts) - 86_400 * 10**9, max(starts) + 86_400 * 10**9, local)
    run.steps(settings, patterns, pull=(*PULLED, *STEP_TABLES))
    assert run.stored == stored
    leftover = chdb.arrow(f"SELECT name FROM system.databases WHERE name LIKE 'jitrace\\_run\\_{os.getpid()}\\_%'"
                          ).num_rows
    assert leftover == 0, "the run's scratch database is dropped"
    return local


# ---- comparing --------------------------------------------------------------------------------------------------


def _value(column: str, value):
    if column in ("evidence",) and value is not None:
        return list(json.loads(value).items())  # the members in order, each value as JSON reads it
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _rows(con: duckdb.DuckDBPyConnection, table: str, columns: list[str]) -> list[tuple]:
    rows = con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
    out = [tuple(_value(col, v) for col, v in zip(columns, row, strict=True)) for row in rows]
    return sorted(out, key=lambda r: json.dumps(r, default=str, sort_keys=True))


def assert_same(duck: duckdb.DuckDBPyConnection, ch: duckdb.DuckDBPyConnection, table: str,
                columns: list[str]) -> int:
    expected, got = _rows(duck, table, columns), _rows(ch, table, columns)
    assert len(got) == len(expected), f"{table}: {len(got)} rows, DuckDB has {len(expected)}"
    for want, have in zip(expected, got, strict=True):
        diffs = {col: (w, h) for col, w, h in zip(columns, want, have, strict=True) if w != h}
        if "evidence" in diffs:  # name the members that differ
            w, h = (dict(x) for x in diffs["evidence"])
            diffs["evidence"] = {k: (w.get(k), h.get(k)) for k in {*w, *h} if w.get(k) != h.get(k)} or "order"
        assert not diffs, f"{table}: row {dict(zip(columns, want, strict=True))} differs: {diffs}"
    return len(expected)


DENIAL_COLUMNS = [  # denials' columns, both engines (lists apart: an array cannot be NULL in ClickHouse)
    "trace_id", "span_id", "server_span_id", "client_span_id", "has_server", "has_client", "service", "method",
    "principal", "status_code", "status_attribute", "time", "server_service", "client_service", "server_domain",
    "client_domain", "server_start_ns", "client_start_ns", "denial_reason", "token_id", "server_token_present",
    "client_token_present", "verdict", "token_iat", "token_nbf", "token_exp", "server_ttl_s", "server_age_s",
    "client_ttl_s", "client_age_s", "client_refreshed", "wait_s", "grant_id", "grant_start", "grant_end",
    "policy_decision", "policy_engine", "policy_id", "policy_version", "policy_rule", "policy_required", "has_issue",
    "stream_checks", "check_verdict", "check_ttl_s", "check_ns", "server_check_local_s", "late_check",
    "server_offset_s", "server_reference", "client_offset_s", "client_reference", "server_lower_s", "server_upper_s",
    "server_error_s", "client_lower_s", "client_upper_s", "client_error_s"]


def assert_parity(duck: duckdb.DuckDBPyConnection, ch: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Every table the two runs share, equal; returns the rows compared per table."""
    counts = {
        "clock_edges": assert_same(duck, ch, "clock_edges", ["domain_a", "domain_b", "bucket", "lo_s", "t_lo_s",
                                                               "hi_s", "t_hi_s", "samples"]),
        "clock_offsets": assert_same(duck, ch, "clock_offsets", ["domain", "reference", "window_start", "window_end",
                                                                 "offset_s", "error_s", "samples", "lower_s",
                                                                 "upper_s", "rate_ppm"]),
        "denied_calls": assert_same(duck, ch, "denied_calls", ["trace_id", "server_span_id", "client_span_id",
                                                               "client_denied"]),
        "denials": assert_same(duck, ch, "denials", DENIAL_COLUMNS),
        "attributions": assert_same(duck, ch, "attributions", list(ATTRIBUTION_COLUMNS)),
        "top_offenders": assert_same(duck, ch, "top_offenders", ["cause", "dimension", "value", "denials", "rank"]),
        "cause_summary": assert_same(duck, ch, "cause_summary", ["cause", "denials"]),
    }
    # a cause's fix is its most frequent one: where two are as frequent, either engine may name either
    tied = {r[0] for r in duck.execute("SELECT cause FROM (SELECT cause, fix, count(*) AS n FROM attributions "
                                       "GROUP BY cause, fix "
                                       "QUALIFY rank() OVER (PARTITION BY cause ORDER BY n DESC) = 1) "
                                       "GROUP BY cause HAVING count(*) > 1").fetchall()}
    fixes = "SELECT cause, fix FROM cause_summary ORDER BY cause"
    assert [r for r in ch.execute(fixes).fetchall() if r[0] not in tied] == [
        r for r in duck.execute(fixes).fetchall() if r[0] not in tied]
    # the lists: DuckDB's NULL is ClickHouse's [] (allowed_versions), or [] with policy_granted_known false
    lists = "trace_id, span_id, coalesce(allowed_versions, []), policy_granted"
    want = sorted(duck.execute(f"SELECT {lists}, policy_granted IS NOT NULL FROM denials").fetchall())
    have = sorted(ch.execute(f"SELECT {lists}, policy_granted_known FROM denials").fetchall())
    assert have == [(*r[:3], r[3] if r[4] else [], r[4]) for r in want]
    # the summary's averages may be summed in another order: equal to the last bits
    shares = dict(((r[0]), r[1:]) for r in duck.execute("SELECT cause, share, mean_confidence FROM cause_summary")
                  .fetchall())
    for cause, share, confidence in ch.execute("SELECT cause, share, mean_confidence FROM cause_summary").fetchall():
        assert (share, confidence) == pytest.approx(shares[cause], rel=1e-12)
    # what notebooks and the API read: the same column types as after a run on files
    for table in ("attributions", "clock_offsets"):
        kinds = "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index"
        assert ch.execute(kinds, [table]).fetchall() == duck.execute(kinds, [table]).fetchall(), table
    return counts


# ---- the tests --------------------------------------------------------------------------------------------------

RULES = {"verdict_missing", "client_sent_no_token", "verdict_invalid", "server_clock_expired_flip",
         "server_clock_not_yet_valid_flip", "server_clock_grant_flip", "client_clock_hid_expiry",
         "expired_before_send", "expired_during_wait", "expired_in_flight", "expired_without_client_evidence",
         "check_outside_grant", "allowed_under_other_version", "permission_not_granted", "permission_reason_only",
         "undecided"}


@pytest.mark.parametrize("stored", [False, True], ids=["facts-computed", "facts-stored"])
def test_every_cause_gives_duckdbs_tables(chdb, stored):
    world = every_cause()
    duck = duckdb_run(world.rows, [], None)
    ch = clickhouse_run(chdb, f"every_cause_{int(stored)}", world.rows, [], None, stored=stored)
    counts = assert_parity(duck, ch)
    rules = {r[0] for r in ch.execute("SELECT rule FROM attributions").fetchall()}
    assert rules >= RULES - {"grant_reason_only"}, RULES - rules  # the world holds what it was built to hold
    causes = {r[0] for r in ch.execute("SELECT cause FROM attributions").fetchall()}
    assert causes == set(c.CAUSES)
    assert counts["clock_edges"] > 0 and counts["clock_offsets"] >= 5


def test_facts_stored_in_part_give_the_same_tables(chdb):
    """A table holding some facts (install-facts of an older jitrace): those are read, the others computed."""
    world = every_cause()
    duck = duckdb_run(world.rows, [], None)
    assert_parity(duck, clickhouse_run(chdb, "some_facts", world.rows, [], None, stored=True,
                                       drop=("jit_policy_request", "check_verdict", "domain")))


def test_old_spellings_of_kind_and_status_give_the_same_tables(chdb):
    world = every_cause()
    duck = duckdb_run(world.rows, [], None)
    assert_parity(duck, clickhouse_run(chdb, "old_spelling", world.rows, [], None, old_spelling=True))


@pytest.mark.parametrize("build", [no_issuer, stepping_clocks], ids=["no-issuer", "stepping-clocks"])
def test_clock_models_give_duckdbs_tables(chdb, build):
    world = build()
    duck = duckdb_run(world.rows, [], None)
    ch = clickhouse_run(chdb, build.__name__, world.rows, [], None)
    assert_parity(duck, ch)
    if build is stepping_clocks:  # the step and the drift made several segments
        assert ch.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM clock_offsets GROUP BY domain)"
                          ).fetchone()[0] >= 2


@pytest.mark.parametrize("skews", [(37.25, -0.125, 0.0), (-1234.5, 600.0, -20.0), (0.0005, -0.0005, 3.0),
                                   (2999.0, -2999.0, 0.0)])
def test_skewed_clocks_give_duckdbs_tables(chdb, skews):
    world = skewed(*skews)
    duck = duckdb_run(world.rows, [], None)
    assert_parity(duck, clickhouse_run(chdb, "skewed", world.rows, [], None))


def test_settings_give_duckdbs_tables(chdb):
    world = every_cause()
    settings = {"jitrace_leeway_s": 30.0, "jitrace_window_s": 0.5, "jitrace_version_window_s": 5.0,
                "jitrace_log_window_s": 0.25}
    logs = logs_of(world)
    duck = duckdb_run(world.rows, logs, settings)
    assert_parity(duck, clickhouse_run(chdb, "settings", world.rows, logs, settings))


def test_log_lines_give_duckdbs_evidence(chdb):
    world = every_cause()
    logs = logs_of(world)
    duck = duckdb_run(world.rows, logs, None)
    ch = clickhouse_run(chdb, "logs", world.rows, logs, None)
    assert_parity(duck, ch)
    lines = ch.execute("SELECT count(*) FROM attributions WHERE evidence LIKE '%\"logs\":%'").fetchone()[0]
    by_log = ch.execute("SELECT count(*) FROM attributions WHERE rule LIKE 'log_pattern:%'").fetchone()[0]
    assert lines >= 6 and by_log >= 1
    assert_same(duck, ch, "denial_logs", ["denial_trace_id", "denial_span_id", "matched_by", "body", "line",
                                          "pattern_name", "pattern_cause", "pattern_ordinal", "pattern_confidence"])


def _normalized_rows(con: duckdb.DuckDBPyConnection, table: str) -> list[dict]:
    from jitrace.analyzer.schema import LOGS, SPANS

    columns = (SPANS if table == "spans" else LOGS).names
    return [dict(zip(columns, r, strict=True)) for r in
            con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()]


@pytest.mark.slow
def test_the_labs_spans_give_duckdbs_tables(chdb, lab_mixed_output):
    """The lab's real services (every cause, a replica's clock skewed by libfaketime), as `jitrace collect` wrote
    their spans and logs."""
    lab = Path(lab_mixed_output).parent / "lab"
    con = session.connect()
    load_into(con, [str(lab / "spans"), str(lab / "logs")])
    spans, logs = _normalized_rows(con, "spans"), _normalized_rows(con, "logs")
    con.close()
    duck = duckdb_run(spans, logs, None)
    ch = clickhouse_run(chdb, "lab", spans, logs, None)
    counts = assert_parity(duck, ch)
    assert counts["attributions"] >= 10
    causes = {r[0] for r in ch.execute("SELECT cause FROM attributions").fetchall()}
    assert causes >= set(c.CAUSES) - {"unexplained"}


def test_a_time_range_reads_only_its_spans(chdb):
    """Spans outside [--since, --until) are not read: a world twice over, a day apart, gives one world's tables."""
    world = every_cause()
    later = [r | {"trace_id": "e" + r["trace_id"][1:], "start_ns": r["start_ns"] + 86_400 * 10**9,
                  "end_ns": r["end_ns"] + 86_400 * 10**9} for r in world.rows]
    from jitrace.analyzer.engines.clickhouse import Source
    from jitrace.analyzer.engines.run import PULLED, Run

    load_otel(chdb, "two_days", world.rows + later)
    local = session.connect()
    day = dt.datetime.fromtimestamp(T0, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = int(day.timestamp()) * 10**9
    run = Run(chdb, Source("chdb", "two_days", "otel_traces"), since, since + 86_400 * 10**9, local)
    run.steps(None, [], pull=(*PULLED, *STEP_TABLES))
    assert run.count("otel_traces") == len(world.rows)
    assert_parity(duckdb_run(world.rows, [], None), local)


@pytest.mark.parametrize("build", [every_cause, no_issuer, stepping_clocks])
def test_the_token_ttl_histograms_count_as_duckdbs(chdb, build):
    """report.html's ttl histograms, counted where the spans are: the same bins and counts as report.ttl_counts."""
    from jitrace.analyzer.engines.clickhouse import Source
    from jitrace.analyzer.engines.run import Run
    from jitrace.analyzer.outputs import report

    world = build()
    load_otel(chdb, f"ttl_{build.__name__}", world.rows)
    starts = [s["start_ns"] for s in world.rows if s["start_ns"]]
    run = Run(chdb, Source("chdb", f"ttl_{build.__name__}", "otel_traces"), min(starts), max(starts) + 1,
              session.connect())
    run.steps(None, [], pull=())
    want = sorted(report.ttl_counts(duckdb_run(world.rows, [], None)))
    assert want and sorted(run.ttl_rows) == want


def test_the_time_range_prunes_the_other_days_partitions(chdb):
    """The spans view filters on the exporter's partition key: ClickHouse reads one day's partition of two."""
    from jitrace.analyzer.engines import otel_traces

    world = every_cause()
    later = [r | {"trace_id": "e" + r["trace_id"][1:], "start_ns": r["start_ns"] + 86_400 * 10**9,
                  "end_ns": r["end_ns"] + 86_400 * 10**9} for r in world.rows]
    load_otel(chdb, "pruned", world.rows + later)
    day = dt.datetime.fromtimestamp(T0, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = int(day.timestamp()) * 10**9
    chdb.use("pruned")
    try:
        chdb.run(otel_traces.spans_view("pruned", "otel_traces", since, since + 86_400 * 10**9))
        plan = "\n".join(chdb.arrow("EXPLAIN indexes = 1 SELECT count() FROM spans WHERE kind = 'SERVER'")
                         .column(0).to_pylist())
    finally:
        chdb.use(None)
    # the partition key's min-max index leaves one part of two (one part a day here)
    assert re.search(r"Min-Max\n\s+Keys:\n\s+Timestamp\n.*?Parts: 1/2", plan, re.DOTALL), plan


def test_evidence_rounds_as_duckdb_does_near_every_tie(chdb):
    """round(x, 9) in DuckDB rounds the exact value of x: where x * 1e9 lands on a half in doubles but the exact
    product is not one, the ClickHouse step's round_to must decide as DuckDB does."""
    import random

    import pyarrow as pa

    from jitrace.analyzer.engines.run import step_sql
    from jitrace.analyzer.steps import pipeline

    rng = random.Random(5)
    values = [round(rng.uniform(-3000, 3000), rng.choice([9, 10, 11])) for _ in range(3000)]
    values += [-15.7221223745, 20.0002831945, 0.5e-9, -2.5e-9, 1.0000000005]
    want = duckdb.connect().execute("SELECT list(round(x, 9)) FROM (SELECT unnest(?::DOUBLE[]) AS x)",
                                    [values]).fetchone()[0]
    text = step_sql(next(s for s in pipeline.steps() if s.name == "attributions")).read_text()
    lambdas = text[text.index("WITH\n"):text.index("log_evidence AS (")].rstrip().rstrip(",")
    chdb.create_table("rounding", pa.table({"i": list(range(len(values))), "x": values}))
    try:
        got = chdb.arrow(f"{lambdas} SELECT round_to(x, 1e9) AS r, round_to(x, 1e3) AS c FROM rounding ORDER BY i")
    finally:
        chdb.run("DROP TABLE rounding")
    assert got.column("r").to_pylist() == want
    confidences = duckdb.connect().execute("SELECT list(round(x, 3)) FROM (SELECT unnest(?::DOUBLE[]) AS x)",
                                           [values]).fetchone()[0]
    assert got.column("c").to_pylist() == confidences
