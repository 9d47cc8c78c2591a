"""``jitrace analyze INPUT... --out DIR``: load, run the SQL steps, write docs/contract.md's outputs, print the table.

Exit codes (analyzer/errors.py): 0 done; 3 (FAIL_ON) when ``--fail-on`` names a cause that was found (a CI gate);
4 (BAD_RECORDS) when some records could not be read (every output is still written); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import duckdb

from jitrace.analyzer import engines, errors, outputs, rule_options
from jitrace.analyzer.load import load_into
from jitrace.analyzer.outputs import denials_table, report, trace_links
from jitrace.analyzer.steps import session
from jitrace.instrumentation import contract

# The columns of attributions.parquet / .csv, in order (docs/contract.md, Outputs, then the extras notebooks use).
ATTRIBUTION_COLUMNS = (
    "trace_id", "span_id", "service", "method", "principal", "status_code", "time", "cause", "rule", "confidence",
    "evidence", "fix", "server_service", "client_service", "server_domain", "client_domain", "client_span_id",
    "server_span_id", "host_time",
)
# attributions.csv: the same, then each denial's link to its trace viewer (empty without a --trace-url template)
CSV_COLUMNS = (*ATTRIBUTION_COLUMNS, "trace_url")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="span/log files, folders or globs (any format); or one ClickHouse table of spans: "
                             "clickhouse://USER@HOST:8123/DB?table=otel_traces or chdb:///PATH?table=otel_traces")
    parser.add_argument("--out", required=True, help="output folder (created; earlier outputs are replaced)")
    parser.add_argument("--fail-on", default="", metavar="CAUSE,...",
                        help=f"exit {errors.FAIL_ON} when denials of these causes are found ('any' for every cause)")
    parser.add_argument("--strict", action="store_true", help="any unreadable record is an error")
    parser.add_argument("--follow-symlinks", action="store_true",
                        help="read files a symbolic link inside an input folder leads to (default: skipped)")
    rule_options.add(parser)
    parser.add_argument("--allow-empty", action="store_true",
                        help=f"inputs holding no span are not an error (exit {errors.USAGE} without it)")
    parser.add_argument("--trace-url", default=None, metavar="TEMPLATE",
                        help="link each denial to its trace: an http(s) URL with {trace_id} (and optionally "
                             "{span_id}), e.g. http://jaeger:16686/trace/{trace_id} (default: $JITRACE_TRACE_URL)")
    parser.add_argument("--quiet", action="store_true", help="no progress and no table")
    parser.add_argument("--since", metavar="TIME", help="with a ClickHouse input (required there): the spans that "
                        "started at or after TIME (ISO 8601, UTC unless it says, or Unix seconds)")
    parser.add_argument("--until", metavar="TIME", help="with a ClickHouse input (required there): the spans that "
                        "started before TIME")


def parse_fail_on(text: str | Iterable[str]) -> tuple[str, ...]:
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if "any" in names:
        return tuple(contract.CAUSES)
    unknown = [n for n in names if n not in contract.CAUSES]
    if unknown:
        raise errors.UserError(f"--fail-on: unknown cause {unknown[0]!r} (causes: {', '.join(contract.CAUSES)})")
    return tuple(names)


def run(args: argparse.Namespace) -> int:
    fail_on = parse_fail_on(args.fail_on)
    trace_url = trace_links.from_settings(args.trace_url)  # a bad template fails before the load, naming its source
    settings = rule_options.settings(args)
    if any(engines.is_url(i) for i in args.inputs):
        from jitrace.analyzer.engines import run as on_clickhouse

        summary = on_clickhouse.analyze(args.inputs, args.out, since=args.since, until=args.until, fail_on=fail_on,
                                        quiet=args.quiet, settings=settings, log_patterns=args.log_patterns,
                                        allow_empty=args.allow_empty, trace_url=trace_url)
        return summary["exit_code"]
    if args.since is not None or args.until is not None:
        raise errors.UserError("--since/--until choose the spans of a ClickHouse input (clickhouse:// or chdb://); "
                               "files are read whole")
    summary = analyze(args.inputs, args.out, strict=args.strict, fail_on=fail_on, quiet=args.quiet, settings=settings,
                      follow_symlinks=args.follow_symlinks, log_patterns=args.log_patterns,
                      allow_empty=args.allow_empty, trace_url=trace_url)
    return summary["exit_code"]


def _progress(quiet: bool):
    started = time.perf_counter()

    def say(message: str) -> None:
        if not quiet:
            print(f"jitrace analyze: [{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    return say


def _load(con: duckdb.DuckDBPyConnection, inputs: list[str], strict: bool, say, follow_symlinks: bool,
          allow_empty: bool) -> dict:
    rep = load_into(con, inputs, strict=strict, progress=say, follow_symlinks=follow_symlinks)
    if not rep.spans and not allow_empty:
        # no data is not a healthy system: a CI gate must not pass on it
        named = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
        found = f"{rep.files} file(s) read" + (f", {rep.skipped_files} of no known format" if rep.skipped_files else "")
        raise errors.UserError(f"no spans in {named} ({found}); --allow-empty accepts inputs without spans")
    return {"spans": rep.spans, "logs": rep.logs, "bad_records": rep.bad_records, "problems": list(rep.problems),
            "skipped_requests": rep.skipped_requests, "duplicate_spans": rep.duplicate_spans,
            "spans_without_time": rep.spans_without_time, "skipped_files": rep.skipped_files,
            "skipped_notes": list(rep.skipped_notes)}


def analyze(
    inputs: list[str],
    out_dir: str | Path,
    *,
    strict: bool = False,
    fail_on: Iterable[str] = (),
    quiet: bool = False,
    settings: dict[str, float] | None = None,
    log_patterns: Iterable[str] = (),
    follow_symlinks: bool = False,
    allow_empty: bool = False,
    trace_url: str | trace_links.TraceUrl | None = None,
) -> dict:
    """Analyze ``inputs`` into ``out_dir``; returns the summary.json content (plus ``exit_code``).
    ``log_patterns``: the users' pattern files (the columns of queries/seeds/log_patterns.csv), tried first.
    Inputs without a single span are a UserError unless ``allow_empty``. ``trace_url``: a template linking each
    denial to its trace (analyzer/outputs/trace_links.py), in the report, the terminal table and attributions.csv."""
    fail_on = parse_fail_on(fail_on)
    if isinstance(trace_url, str):
        trace_url = trace_links.parse(trace_url, "trace_url")
    log_patterns = list(log_patterns)
    say = _progress(quiet)
    # Everything is built in a staging folder and moved in file by file at the end (analyzer/outputs/): a failed run
    # leaves the previous output, and nothing in out_dir that is not the analyzer's is touched.
    closing: list[threading.Thread] = []
    try:
        with outputs.staged(out_dir) as out:
            summary = _analyze_into(out, list(inputs), strict=strict, quiet=quiet, settings=settings, say=say,
                                    log_patterns=log_patterns, closing=closing,
                                    follow_symlinks=follow_symlinks, allow_empty=allow_empty, trace_url=trace_url)
    finally:
        for thread in closing:  # the database is closed before analyze returns: a notebook may open it next
            thread.join()
    summary["exit_code"] = exit_code(summary, fail_on, say)
    return summary


def exit_code(summary: dict, fail_on: tuple[str, ...], say: Callable[[str], None]) -> int:
    """The run's exit code from its summary: FAIL_ON when --fail-on names a cause found, BAD_RECORDS when records
    could not be read, else OK."""
    gate = [c for c in fail_on if summary["causes"].get(c)]
    if gate:
        counts = ", ".join(f"{c} ({summary['causes'][c]})" for c in gate)
        say(f"--fail-on: found {counts}")
        return errors.FAIL_ON
    if summary["bad_records"]:
        say(f"{summary['bad_records']} record(s) could not be read; see summary.json 'problems'")
        return errors.BAD_RECORDS
    return errors.OK


def _analyze_into(out: Path, inputs: list[str], *, strict: bool, quiet: bool, settings: dict[str, float] | None,
                  say, log_patterns: list[str], closing: list[threading.Thread],
                  follow_symlinks: bool = False, allow_empty: bool = False,
                  trace_url: trace_links.TraceUrl | None = None) -> dict:
    """The run; the connection's close is left to a thread appended to ``closing`` when the database file is complete
    (checkpointed), so the caller publishes the folder meanwhile and joins it after."""
    con = session.connect(out / "jitrace.duckdb", define_view=False)  # _load defines it
    checkpointed = False
    try:
        session.load_log_patterns(con, log_patterns)  # a bad pattern file fails before the (long) load, not after it
        say(f"loading {len(inputs)} input(s)")
        loaded = _load(con, list(inputs), strict, say, follow_symlinks, allow_empty)
        say(f"loaded {loaded['spans']} spans, {loaded['logs']} logs, {loaded['bad_records']} bad records")
        if loaded["skipped_requests"]:
            say(f"skipped {loaded['skipped_requests']} OTLP export request(s) of metrics or profiles "
                "(jitrace reads spans and logs)")
        if loaded["duplicate_spans"]:
            say(f"dropped {loaded['duplicate_spans']} copies of spans seen more than once (one row per span)")
        if loaded["spans_without_time"]:
            say(f"{loaded['spans_without_time']} spans without a start or an end: loaded, no clock sample from them")
        if loaded["skipped_files"]:
            say(f"skipped {loaded['skipped_files']} file(s) of no known format in the input folders, e.g. "
                f"{loaded['skipped_notes'][0]}")
        with ThreadPoolExecutor(1) as beside:
            # the report's ttl counts read only the spans: counted on the other core once the steps that keep both
            # busy are done (from denied_calls on, they run mostly on one)
            ttl = _StartAfter("clock_offsets", lambda: beside.submit(session.on_cursor, con, report.ttl_counts))
            # the notebooks' view of denials (a TEMP table) binds its query again: on the other core, beside the rest
            views = _StartAfter("denials", lambda: _keep_as_views_beside(con, beside))
            session.run_queries(con, settings=settings, log_patterns=None,  # patterns loaded above
                                progress=lambda step, s: (say(f"{step} ({s:.2f} s)"), ttl.step_done(step),
                                                          views.step_done(step)))
            views.result()
            # the tables are final: the database file is checkpointed (the notebooks' views, the small tables left in
            # the WAL, the attributions being in the file already, analyzer/steps/database.py) while
            # the outputs read them
            session.keep_as_views(con)  # any TEMP table a later step made (none today)
            # the checkpoint, the CSV, the Parquet files and the report side by side; set while nothing runs beside
            # (it waits for a running query's threads)
            outputs.one_thread_each(con)
            checkpoint = beside.submit(session.on_cursor, con, session.checkpoint)
            # report.html's table of denials reads only the attributions: built beside the CSV and the Parquet files
            denials_data = beside.submit(session.on_cursor, con,
                                         lambda cursor: denials_table.data_json(cursor, trace_url))
            with session.reading_inputs("the report's ttl counts"):
                ttl_rows = ttl.result()
            summary = _write_outputs(con, out, loaded, quiet, say, ttl_rows, trace_url, denials_data.result)
            checkpointed = checkpoint.result()
    finally:
        if checkpointed:
            # nothing is left to write (the outputs only read since the checkpoint): the close frees the memory
            # (mostly the kernel unmapping it), beside the publishing of the folder
            closer = threading.Thread(target=con.close, name="jitrace-close")
            closer.start()
            closing.append(closer)
        else:
            con.close()  # it checkpoints: the file must be whole before the folder is published
    return summary


def _keep_as_views_beside(con: duckdb.DuckDBPyConnection, pool: ThreadPoolExecutor) -> Future:
    """session.keep_as_views for the TEMP tables so far: which ones asked on ``con`` (idle between two steps), the
    views created on a cursor in ``pool`` while the next steps run."""
    views = session.views_to_keep(con)
    return pool.submit(session.on_cursor, con, lambda cursor: session.create_views(cursor, views))


class _StartAfter:
    """Work started (``start``, which returns a Future) once the step ``after`` is done."""

    def __init__(self, after: str, start: Callable[[], Future]) -> None:
        self.after, self.start, self.future = after, start, None

    def step_done(self, step: str) -> None:
        if step == self.after and self.future is None:
            self.future = self.start()

    def result(self):
        """The work's result; None if it never started (the caller then does it itself)."""
        return None if self.future is None else self.future.result()


def _write_outputs(con: duckdb.DuckDBPyConnection, out: Path, loaded: dict, quiet: bool, say,
                   ttl_rows: list[tuple] | None, trace_url: trace_links.TraceUrl | None = None,
                   denials_data: Callable[[], str] | None = None) -> dict:
    """summary.json, report.html and the attribution files (analyzer/outputs/); returns the summary.
    ``denials_data``: gives the report's table of denials, built elsewhere (else built here)."""
    links = "NULL::VARCHAR" if trace_url is None else trace_url.sql()
    # the CSV meanwhile, on the other core
    with outputs.tables_written(con, out, ATTRIBUTION_COLUMNS, csv_extra={"trace_url": links}):
        found = dict(con.execute("SELECT cause, denials FROM cause_summary").fetchall())
        causes = {cause: found.get(cause, 0) for cause in contract.CAUSES}  # every cause, so CI scripts can index
        summary = {
            "spans": loaded["spans"],
            "logs": loaded["logs"],
            "denials": sum(causes.values()),
            "causes": causes,
            "bad_records": loaded["bad_records"],
            "skipped_requests": loaded["skipped_requests"],
            "duplicate_spans": loaded["duplicate_spans"],
            "spans_without_time": loaded["spans_without_time"],
            "skipped_files": loaded["skipped_files"],
            "problems": loaded["problems"][:50],
            "clock_reference": report.clock_reference(con),
            "clock_domains": con.execute("SELECT count(DISTINCT domain) FROM clock_offsets").fetchone()[0],
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        say("writing report.html")
        report.write_html(con, out / "report.html", summary, ttl_rows=ttl_rows, trace_url=trace_url,
                          denials_data=denials_data)
        if not quiet:
            print(report.terminal(con, summary, trace_url))
    return summary
