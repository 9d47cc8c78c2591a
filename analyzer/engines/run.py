"""``jitrace analyze clickhouse://... --since T --until T --out DIR``: the analysis run inside ClickHouse.

The steps of queries/steps.toml, in their ClickHouse form (queries/clickhouse/steps/), run where the spans are, in a
scratch database of their own (``jitrace_run_...``, dropped when the run ends, whatever happens); only what is small
comes back: the clock samples (clock_edges), which
the clock model (analyzer/steps/offsets.py) fits in Python exactly as for files, its offsets pushed back for the steps
that read them, then the attributions, denials, their log lines and the summaries. Those land in the output
folder's jitrace.duckdb, so report.html, summary.json, the notebooks and the API read the same tables as after a
run on files (docs/contract.md, "ClickHouse"). The spans stay in ClickHouse: the local ``spans`` and ``logs`` are
empty, and summary.json names the source and the time range.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

import duckdb

from jitrace.analyzer import analyze as files
from jitrace.analyzer import errors, outputs
from jitrace.analyzer.engines import otel_traces
from jitrace.analyzer.engines.clickhouse import ClickHouseEngine, Source, engine_errors, literal, parse_url, quote
from jitrace.analyzer.outputs import report, trace_links
from jitrace.analyzer.outputs.report import printable
from jitrace.analyzer.redact import redact_table
from jitrace.analyzer.steps import offsets, pipeline, session

# The steps' tunables (analyzer/steps/session.py's VARIABLES) and their defaults, as the DuckDB steps write them.
DEFAULTS = {"jitrace_window_s": 300.0, "jitrace_leeway_s": 0.0, "jitrace_version_window_s": 300.0,
            "jitrace_log_window_s": 2.0}
# What comes back into jitrace.duckdb (clock_offsets is there already: the clock model wrote it).
PULLED = ("attributions", "denials", "denial_logs", "cause_summary", "top_offenders")
# Their text columns that may hold strings from the wire: redacted as the loaders redact spans (analyzer/redact.py).
REDACTED = {"attributions": ("principal", "evidence", "fix"), "denials": ("principal",),
            "denial_logs": ("body", "line")}

# The normalized logs schema (analyzer/schema.py's LOGS) in ClickHouse: the run's `logs` when no log table is named.
EMPTY_LOGS = ("CREATE TABLE logs (time_ns Nullable(Int64), observed_ns Nullable(Int64), trace_id Nullable(String), "
              "span_id Nullable(String), severity_number Nullable(Int32), severity_text Nullable(String), "
              "body Nullable(String), service Nullable(String), resource Nullable(String), "
              "attributes Nullable(String), scope Nullable(String), source Nullable(String)) ENGINE = Memory")

# report.ttl_counts in this dialect: the ttl histograms of report.html, counted where the spans are. Each side's range
# is one scalar subquery (ClickHouse computes it once, before the count) instead of a join of every span with it.
TTL_WHERE = ("jit_token_ttl_s IS NOT NULL AND isFinite(jit_token_ttl_s) AND kind IN ('CLIENT', 'SERVER')")
TTL_COUNTS = f"""
WITH (
    SELECT (minIf(jit_token_ttl_s, kind = 'CLIENT'), maxIf(jit_token_ttl_s, kind = 'CLIENT'),
            minIf(jit_token_ttl_s, kind = 'SERVER'), maxIf(jit_token_ttl_s, kind = 'SERVER'))
    FROM rpc_spans WHERE {TTL_WHERE}
) AS ranges
SELECT kind, if(kind = 'CLIENT', ranges.1, ranges.3) AS lo, if(kind = 'CLIENT', ranges.2, ranges.4) AS hi, denied,
       toInt32(if(hi = lo, {report.TTL_BINS} - 1,
                  least(floor((jit_token_ttl_s - lo) / (hi - lo) * {report.TTL_BINS}), {report.TTL_BINS} - 1))) AS bin,
       count() AS n
FROM rpc_spans
WHERE {TTL_WHERE}
GROUP BY kind, denied, bin
"""

ISSUER = ("SELECT domain FROM rpc_spans WHERE name = 'jit.issue' GROUP BY domain ORDER BY count() DESC, domain "
          "LIMIT 1")


def step_sql(step: pipeline.Step) -> Path:
    """A step's ClickHouse statements: queries/clickhouse/ beside the DuckDB file's path (steps/NAME.sql). Unlike
    DuckDB's, which hold one query the runner wraps, each creates the step's object itself: ClickHouse has no TEMP
    tables and keeps no CTE's rows, so a step may also make (and drop) helper tables of its own."""
    assert step.sql is not None, step.name
    return Path(str(resources.files("jitrace.queries"))) / "clickhouse" / step.sql


def parse_time(text: str | None, option: str) -> int:
    """``--since``/``--until``: ISO 8601 (UTC unless it gives an offset) or Unix seconds -> Unix nanoseconds."""
    if text is None:
        raise errors.UserError(f"{option} is required with a ClickHouse input: the time range chooses the "
                               "partitions read (e.g. --since 2025-10-09T08:00:00Z --until 2025-10-09T09:00:00Z)")
    try:
        return round(float(text) * 1e9)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise errors.UserError(f"{option} {printable(text[:60])!r}: expected a time such as 2025-10-09T08:00:00Z "
                               "or Unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    since_epoch = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (since_epoch.days * 86400 + since_epoch.seconds) * 10**9 + since_epoch.microseconds * 1000


def _values(settings: dict[str, float] | None, pattern_ordinal: str) -> dict[str, str]:
    values = dict(DEFAULTS)
    for name, value in (settings or {}).items():
        if name not in values:
            raise ValueError(f"unknown analyzer setting {name!r}")
        values[name] = float(value)
    return {**{k: repr(float(v)) for k, v in values.items()}, "log_pattern_ordinal": pattern_ordinal}


def pattern_ordinal(rows: list[tuple]) -> str:
    """session.load_log_patterns' macro in this dialect: the ordinal of the first pattern ``body`` matches (RE2,
    case-insensitive, anywhere), the patterns as constants; NULL when none does. ``rows``: log_patterns' rows."""
    if not rows:
        return "CAST(NULL AS Nullable(Int32))"
    cases = ", ".join(f"match(coalesce(body, ''), {literal('(?i)' + row[2])}), {int(row[0])}" for row in rows)
    return f"CAST(multiIf({cases}, NULL) AS Nullable(Int32))"


class Run:
    """One analysis on ClickHouse: ``engine`` (already connected) reading ``source``'s spans started in
    [since_ns, until_ns); the local DuckDB ``con`` receives what comes back."""

    def __init__(self, engine: ClickHouseEngine, source: Source, since_ns: int, until_ns: int,
                 con: duckdb.DuckDBPyConnection, say: Callable[[str], None] = lambda _m: None) -> None:
        self.engine, self.source, self.since_ns, self.until_ns = engine, source, since_ns, until_ns
        self.con, self.say = con, say
        self.scratch = f"jitrace_run_{os.getpid()}_{secrets.token_hex(4)}"
        self.timings: dict[str, float] = {}
        self.stored = False  # whether the table holds the facts (install-facts)
        self.ttl_rows: list[tuple] = []  # report.ttl_counts' rows, counted where the spans are

    def _query_error(self, what: str, exc: BaseException) -> errors.UserError:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return errors.UserError(printable(f"{self.engine.where}: {what} failed: {text[:500]}"))

    def count(self, table: str) -> int:
        where = (f"Timestamp >= fromUnixTimestamp64Nano(toInt64({self.since_ns})) "
                 f"AND Timestamp < fromUnixTimestamp64Nano(toInt64({self.until_ns}))")
        return int(self.engine.scalar(f"SELECT count() FROM {otel_traces.table_name(self.source.database, table)} "
                                      f"WHERE {where}") or 0)

    def logs_view(self, log_columns: dict[str, tuple[str, str]]) -> str:
        """The run's ``logs`` in the normalized schema: the exporter's log table (``log_columns``: its columns) over
        the time range widened by an hour on both sides (a call's log lines may be stamped by a skewed clock), or an
        empty table when the run names none."""
        if not self.source.logs_table:
            return EMPTY_LOGS
        name = otel_traces.table_name(self.source.database, self.source.logs_table)
        since, until = f"toInt64({self.since_ns})", f"toInt64({self.until_ns})"
        # the exporter partitions its log table by TimestampTime (seconds): the same range on it prunes partitions
        partitions = (f"AND TimestampTime >= toDateTime(intDiv({since}, 1000000000)) - INTERVAL 1 HOUR "
                      f"AND TimestampTime <= toDateTime(intDiv({until}, 1000000000)) + INTERVAL 1 HOUR "
                      if "TimestampTime" in log_columns else "")
        return (f"CREATE VIEW logs AS SELECT nullIf(toUnixTimestamp64Nano(Timestamp), 0) AS time_ns, "
                "CAST(NULL AS Nullable(Int64)) AS observed_ns, nullIf(TraceId, '') AS trace_id, "
                "nullIf(SpanId, '') AS span_id, CAST(SeverityNumber AS Nullable(Int32)) AS severity_number, "
                "nullIf(toString(SeverityText), '') AS severity_text, CAST(Body AS Nullable(String)) AS body, "
                "nullIf(toString(ServiceName), '') AS service, "
                "CAST(toJSONString(ResourceAttributes) AS Nullable(String)) AS resource, "
                "CAST(toJSONString(LogAttributes) AS Nullable(String)) AS attributes, "
                f"CAST(ScopeName AS Nullable(String)) AS scope, {literal(self.source.logs_table)} AS source "
                f"FROM {name} WHERE Timestamp >= fromUnixTimestamp64Nano({since}) - INTERVAL 1 HOUR "
                f"AND Timestamp < fromUnixTimestamp64Nano({until}) + INTERVAL 1 HOUR {partitions}")

    def steps(self, settings: dict[str, float] | None, patterns: list[tuple],
              progress: Callable[[str, float], None] | None = None, pull: tuple[str, ...] = PULLED,
              stored: frozenset[str] | None = None) -> None:
        """Create the scratch database, run every step of the manifest there (clock_offsets by the clock model),
        pull the tables ``pull`` into ``con``, and drop the scratch database. ``patterns``: log_patterns' rows;
        ``stored``: otel_traces.check's answer, when the caller has it already."""
        if stored is None:
            stored = otel_traces.check(self.engine, self.source.database, self.source.table)
        self.stored = stored == frozenset(otel_traces.fact_names())
        log_columns = (otel_traces.columns(self.engine, self.source.database, self.source.logs_table)
                       if self.source.logs_table else {})
        values = _values(settings, pattern_ordinal(patterns))
        stage = "creating the run's database"
        try:
            self.engine.run(f"CREATE DATABASE {quote(self.scratch)}")
        except engine_errors() as exc:
            raise self._query_error(stage, exc) from None
        try:
            self.engine.use(self.scratch)
            stage = "reading the spans"
            self.engine.run(otel_traces.spans_view(self.source.database, self.source.table, self.since_ns,
                                                   self.until_ns, stored))
            self.engine.run(self.logs_view(log_columns))
            self.seeds()
            self.log_patterns(patterns)
            for step in pipeline.steps():  # queries/steps.toml: DuckDB's steps, in their order, under their names
                started = time.perf_counter()
                stage = f"step {step.name}"
                if step.sql is None:
                    if step.name != "clock_offsets":
                        raise ValueError(f"no ClickHouse form of the Python step {step.name}")
                    self.clock_model()
                else:
                    for statement in otel_traces.step_statements(step_sql(step).read_text(), values):
                        self.engine.run(statement)
                self.timings[step.name] = time.perf_counter() - started
                if progress is not None:
                    progress(step.name, self.timings[step.name])
            stage = "counting the token ttls"
            self.ttl_rows = [tuple(r.values()) for r in self.engine.arrow(TTL_COUNTS).to_pylist()]
            stage = "pulling the results"
            self.pull(pull)
        except engine_errors() as exc:
            raise self._query_error(stage, exc) from None
        finally:
            try:  # the run's database goes, whatever happened
                self.engine.use(None)
                self.engine.run(f"DROP DATABASE IF EXISTS {quote(self.scratch)} SYNC")
            except engine_errors() as exc:
                self.say(printable(f"could not drop the run's database {self.scratch} ({str(exc)[:200]}): "
                                   "drop it by hand"))

    def log_patterns(self, patterns: list[tuple]) -> None:
        """The run's ``log_patterns`` (its rows ``patterns``, in session.load_log_patterns' schema), pushed from a
        temporary table of the local database."""
        rows = self.con.cursor()
        try:
            rows.execute("CREATE TEMP TABLE jitrace_log_patterns (ordinal INTEGER, name VARCHAR, pattern VARCHAR, "
                         "cause VARCHAR, confidence DOUBLE, description VARCHAR, source VARCHAR)")
            if patterns:
                rows.executemany("INSERT INTO jitrace_log_patterns VALUES (?, ?, ?, ?, ?, ?, ?)", patterns)
            self.engine.push(rows, "SELECT * FROM jitrace_log_patterns ORDER BY ordinal", "log_patterns")
        finally:
            rows.close()

    def seeds(self) -> None:
        """The manifest's seeds (rules, fixes), read into the local database as for files and pushed as tables."""
        pipeline.load_seeds(self.con)
        for seed in pipeline.manifest()[0]:
            self.engine.push(self.con, f"SELECT * FROM {seed.name}", seed.name)

    def clock_model(self) -> None:
        """clock_edges -> analyzer/steps/offsets.py -> clock_offsets, here (the local DuckDB table, as for files) and in
        the scratch database (for the denials and attributions steps)."""
        edges = self.engine.arrow(f"SELECT {', '.join(offsets.EDGE_COLUMNS)} FROM clock_edges "
                                  "ORDER BY domain_a, domain_b, bucket")
        rows = list(zip(*(edges.column(c).to_pylist() for c in offsets.EDGE_COLUMNS), strict=True))
        reference = self.engine.scalar(ISSUER)
        pairs = sorted({(b[0], b[1]) for b in offsets.changes(rows, reference)})
        samples = self.con.cursor()  # the clock samples of the pairs whose clock changed, pulled for the fine fit
        try:
            wanted = " OR ".join(f"(domain_a = {literal(a)} AND domain_b = {literal(b)})" for a, b in pairs)
            self.engine.pull("SELECT domain_a, domain_b, lo_s, t_lo_s, hi_s, t_hi_s FROM clock_samples "
                             f"WHERE {wanted or 'false'}", samples, "clock_samples", temporary=True)
            offsets.store(self.con, offsets.model(rows, reference, samples))
        finally:
            samples.close()
        self.engine.push(self.con, "SELECT * FROM clock_offsets ORDER BY domain, window_start", "clock_offsets")

    def pull(self, names: tuple[str, ...]) -> None:
        """The small tables into the local database, text from the wire redacted."""
        order = {"attributions": " ORDER BY time, trace_id, span_id", "denials": " ORDER BY trace_id, span_id",
                 "cause_summary": " ORDER BY denials DESC, cause", "top_offenders": " ORDER BY cause, dimension, rank"}
        for name in names:
            self.engine.pull(f"SELECT * FROM {quote(name)}{order.get(name, '')}", self.con, name)
            if name in REDACTED:
                redact_table(self.con, name, REDACTED[name])


def analyze(inputs: Iterable[str], out_dir: str | Path, *, since: str | None, until: str | None,
            fail_on: Iterable[str] = (), quiet: bool = False, settings: dict[str, float] | None = None,
            log_patterns: Iterable[str] = (), allow_empty: bool = False,
            trace_url: trace_links.TraceUrl | None = None) -> dict:
    """``jitrace analyze URL --since T --until T --out DIR``; returns the summary (plus ``exit_code``)."""
    inputs = list(inputs)
    if len(inputs) != 1:
        raise errors.UserError("a ClickHouse input is the run's only input (analyze files in a run of their own)")
    fail_on = files.parse_fail_on(fail_on)
    source = parse_url(inputs[0])
    since_ns, until_ns = parse_time(since, "--since"), parse_time(until, "--until")
    if until_ns <= since_ns:
        raise errors.UserError("--until must be later than --since")
    say = files._progress(quiet)
    with outputs.staged(out_dir) as out:
        con = session.connect(out / "jitrace.duckdb")
        try:
            session.load_log_patterns(con, list(log_patterns))  # a bad pattern file fails before ClickHouse is asked
            patterns = con.execute("SELECT ordinal, name, pattern, cause, confidence, description, source "
                                   "FROM log_patterns ORDER BY ordinal").fetchall()
            engine = source.connect()
            try:
                run = Run(engine, source, since_ns, until_ns, con, say)
                stored = otel_traces.check(engine, source.database, source.table)  # a wrong table fails first
                spans = run.count(source.table)
                logs = run.count(source.logs_table) if source.logs_table else 0
                say(f"{spans} spans in {source.display()} between {since} and {until}")
                if not spans and not allow_empty:
                    raise errors.UserError(f"no spans in {source.display()} between {since} and {until}; "
                                           "--allow-empty accepts a range without spans")
                run.steps(settings, patterns, progress=lambda step, s: say(f"{step} ({s:.2f} s)"), stored=stored)
            finally:
                engine.close()
            loaded = {"spans": spans, "logs": logs, "bad_records": 0, "problems": [], "skipped_requests": 0,
                      "duplicate_spans": 0, "spans_without_time": 0, "skipped_files": 0, "skipped_notes": []}
            # the span-level relations stay in ClickHouse: here the DuckDB step's rpc_spans over the empty spans view,
            # so what reads it (analyzer/investigate.py, the notebooks) runs, on no spans
            con.execute(next(s for s in pipeline.steps() if s.name == "rpc_spans").create(temp_ok=False))
            session.keep_as_views(con)
            outputs.one_thread_each(con)
            summary = files._write_outputs(con, out, loaded, quiet, say, run.ttl_rows, trace_url)
            summary["source"] = {"url": source.display(), "since": since, "until": until,
                                 "facts_stored": run.stored}
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        finally:
            con.close()
    summary["exit_code"] = files.exit_code(summary, fail_on, say)
    return summary
