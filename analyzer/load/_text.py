"""Text inputs (every format but Parquet): OTLP JSON-lines span files the C reader reads exactly
(``_otlp_json_native``), the rest parsed in Python, in this process or, for big inputs, in worker processes
(``_parallel``). A module of its own so that a run on Parquet alone never imports these readers."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from jitrace.analyzer import schema
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import _formats, _otlp_json_native, _parallel
from jitrace.analyzer.rows import Rows, spans_table, table
from jitrace.analyzer.steps import database, spans_view

if TYPE_CHECKING:
    import pyarrow as pa

    from jitrace.analyzer.load import LoadReport

MAX_PROBLEMS = 1000  # lines kept in the report; the count stays exact
_FLUSH_ROWS = 250_000  # rows held in Python before they go to DuckDB
FAST_PATH = True  # OTLP JSON-lines span files through the C reader when it reads them exactly (tests, bench)


def load(con: duckdb.DuckDBPyConnection, files: list[Path], strict: bool, report: LoadReport,
         named: set[Path] = frozenset()) -> None:  # type: ignore[assignment]
    """Insert every record of ``files`` into ``span_fact_rows`` (spans, with their facts) and ``logs``, counting into
    ``report``. A file in no known format is an error when ``named`` holds it, else skipped and counted."""
    files = [path for path in files if not _load_fast(con, path, strict, report)]
    # Zipkin and Jaeger documents are streamed here, flushed as they are read: a worker would hold all its rows
    streamed = [path for path in files if _formats.streamed(path)] if len(files) > 1 else []
    files = [path for path in files if path not in streamed]
    units = _parallel.plan(files)
    with _Spans(con, report) as spans:
        if units is None:
            _load_here(con, spans, streamed + files, strict, report, named)
            return
        _load_here(con, spans, streamed, strict, report, named)
        for parsed in _parallel.run(units):
            if parsed.unknown is not None:
                _skip(parsed.unknown, named, report)
                continue
            _count_bad(parsed.bad, parsed.problems, strict, report)
            report.skipped_requests += parsed.skipped
            spans.store(parsed.spans)
            _insert_logs(con, parsed.logs, report)


class _Spans:
    """Batches of spans stored with their facts (spans_view.insert_with_facts) on a thread of their own, on a cursor
    (DuckDB releases the GIL), while the next batch is read: one batch stored at a time, so at most two are held. A
    failed store is raised at the next ``store`` or when the block ends. Inside a caller's transaction the batches
    are stored on its connection, in that transaction, as they come."""

    def __init__(self, con: duckdb.DuckDBPyConnection, report: LoadReport) -> None:
        self.con, self.report = con, report
        self.pool: ThreadPoolExecutor | None = None
        self.cursor: duckdb.DuckDBPyConnection | None = None  # the pool's, made with it
        self.pending: Future | None = None
        self.here = database.in_transaction(con)

    def store(self, batch: pa.Table) -> None:
        if not batch.num_rows:
            return
        self.wait()
        if self.here:
            _store(self.con, batch)
        else:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(1, thread_name_prefix="jitrace-load")
                self.cursor = database.cursor(self.con)
            self.pending = self.pool.submit(_store, self.cursor, batch)
        self.report.spans += batch.num_rows
        self.report.tick()

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> _Spans:
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if error is None:
                self.wait()
            elif self.pending is not None:  # the load failed: its own error is the one to report
                self.pending.exception()
        finally:
            if self.pool is not None:
                self.pool.shutdown()
            if self.cursor is not None:
                self.cursor.close()


def _store(cursor: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
    cursor.register("jitrace_load_batch", batch)
    try:
        spans_view.insert_with_facts(cursor, "jitrace_load_batch")
    finally:
        cursor.unregister("jitrace_load_batch")


def _load_fast(con: duckdb.DuckDBPyConnection, path: Path, strict: bool, report: LoadReport) -> bool:
    """Whether ``path`` was loaded by the fast path (else nothing of it was). Ranges the C reader left to the
    Python reader bring their logs, bad records and skipped requests back here."""
    if not FAST_PATH:
        return False
    loaded = _otlp_json_native.insert(con, path)
    if loaded is None:
        return False
    report.spans += loaded.spans
    rows = loaded.rows
    _count_bad(rows.bad, rows.problems, strict, report)
    report.skipped_requests += rows.skipped
    if rows.logs:
        _insert_logs(con, table(rows.logs, schema.LOGS), report)
    report.tick()
    return True


def _skip(err: _formats.UnknownFormat, named: set[Path], report: LoadReport) -> None:
    if err.path is None or err.path in named:
        raise err
    report.skipped_files += 1
    if len(report.skipped_notes) < 5:
        report.skipped_notes.append(str(err))


def _load_here(con: duckdb.DuckDBPyConnection, spans: _Spans, files: list[Path], strict: bool, report: LoadReport,
               named: set[Path]) -> None:
    """Parse ``files`` in this process, inserting every ``_FLUSH_ROWS`` rows (a streamed file's spans as they come)."""
    pending = Rows()

    def flush_spans(rows: Rows) -> None:
        spans.store(spans_table(rows))
        rows.spans, rows.span_tables = [], []

    for path in files:
        rows = Rows()
        try:
            _formats.read_path(path, rows, flush_spans)
        except _formats.UnknownFormat as err:
            _skip(err, named, report)
            continue
        _count_bad(rows.bad, rows.problems, strict, report)
        report.skipped_requests += rows.skipped
        rows.problems = []
        pending.extend(rows)
        if len(pending.spans) + len(pending.logs) + sum(t.num_rows for t in pending.span_tables) >= _FLUSH_ROWS:
            _flush(con, spans, pending, report)
            pending = Rows()
    _flush(con, spans, pending, report)


def _count_bad(bad: int, problems: list[str], strict: bool, report: LoadReport) -> None:
    if not bad:
        return
    if strict:
        raise UserError(f"{problems[0]} (--strict: {bad} bad record(s) in this file)")
    report.bad_records += bad
    room = MAX_PROBLEMS - len(report.problems)
    report.problems += problems[:max(room, 0)]


def _flush(con: duckdb.DuckDBPyConnection, spans: _Spans, rows: Rows, report: LoadReport) -> None:
    # only rows make Arrow tables: an input of Parquet alone never imports pyarrow (analyzer/schema.py)
    if rows.spans or rows.span_tables:
        spans.store(spans_table(rows))
    if rows.logs:
        _insert_logs(con, table(rows.logs, schema.LOGS), report)


def _insert_logs(con: duckdb.DuckDBPyConnection, batch: pa.Table, report: LoadReport) -> None:
    if not batch.num_rows:
        return
    con.register("jitrace_load_logs", batch)
    try:
        con.execute("INSERT INTO logs SELECT * FROM jitrace_load_logs")
    finally:
        con.unregister("jitrace_load_logs")
    report.logs += batch.num_rows
    report.tick()
