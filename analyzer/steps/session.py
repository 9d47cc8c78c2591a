"""The DuckDB session: runs the pipeline declared in queries/steps.toml (pipeline.py) on a database holding
``spans``/``logs``: the connection's settings, the log patterns, the steps, and the views that keep TEMP tables.

Python orchestrates, SQL computes: the only step done in Python is solving the small clock-offset graph
(analyzer/steps/offsets.py), declared in the manifest like the others.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import time
from collections.abc import Callable, Collection, Iterator
from importlib import resources
from pathlib import Path
from typing import TypeVar

import duckdb

from jitrace.analyzer.errors import UserError
from jitrace.analyzer.schema import LOGS, duckdb_ddl
from jitrace.analyzer.steps import database, pipeline, spans_view
from jitrace.instrumentation import contract

T = TypeVar("T")


def on_cursor(con: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """``work`` done on a cursor of its own, closed after: a connection to the same database, so statements on two
    cursors run at once (from two threads; DuckDB releases the GIL while it works). A cursor does not see its
    connection's TEMP tables."""
    cursor = database.cursor(con)
    try:
        return work(cursor)
    finally:
        cursor.close()


def checkpoint(con: duckdb.DuckDBPyConnection) -> bool:
    """Write what the steps stored into the database file now (checkpoint_threshold defers it to the close); readers
    may go on meanwhile. DuckDB refuses it while another transaction writes, and also when something committed after
    a COPY that is still running began (so every table and view must be final before the outputs start): then the
    close does it, and this returns False. test_the_database_file_is_checkpointed_beside_the_outputs checks that it
    is not refused."""
    try:
        con.execute("CHECKPOINT")
    except duckdb.TransactionException:
        return False
    return True


# Tunables a user may set; the SQL reads them with getvariable() and documents its default.
VARIABLES = ("jitrace_window_s", "jitrace_leeway_s", "jitrace_version_window_s", "jitrace_log_window_s")

# The documented log patterns (queries/seeds/log_patterns.csv): weaker evidence for denials whose spans lack jit facts.
LOG_PATTERN_FIELDS = ("name", "pattern", "cause", "confidence", "description")

# DuckDB takes 80% of RAM by default; the analyzer is a batch job beside services, so it stays small and spills
# to disk instead (JITRACE_MEMORY_LIMIT, any DuckDB size such as "4GB", raises it).
DEFAULT_MEMORY_LIMIT = "1500MB"  # 10M spans load and analyze within 2 GB peak RSS


_SIZE = re.compile(r"\s*\d+(\.\d+)?\s*([KMGT]i?B|B|%)?\s*", re.IGNORECASE)


def memory_limit() -> str:
    """JITRACE_MEMORY_LIMIT, checked to be a size (a number and a unit such as MB, GiB or %): a bound parameter,
    never SQL text; anything else is a one-line error naming the variable."""
    value = os.environ.get("JITRACE_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT)
    if not _SIZE.fullmatch(value):
        raise UserError(f"JITRACE_MEMORY_LIMIT {value[:40]!r}: expected a size such as 1500MB or 4GB")
    return value.strip()


def connect(path: str | Path = ":memory:", *, define_view: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection with an empty ``spans`` view and ``logs`` table (the loader adds to them; spans_view.py), on the
    database file at ``path`` (analyzer/steps/database.py) or in memory. ``define_view=False`` leaves the view to the
    loader, which defines it over what it loaded (the empty view would bind span_facts.sql for nothing)."""
    con = duckdb.connect() if str(path) == ":memory:" else database.connect(path)
    con.execute("SET memory_limit = ?", [memory_limit()])
    con.execute("SET preserve_insertion_order = false")  # lets big inserts stream instead of buffering
    con.execute("SET enable_progress_bar = false")
    # Every step that reads the spans binds the Parquet files again, footers included (union_by_name); cached
    # footers make each of those binds cheaper.
    # The cache belongs to this connection's database instance, which lives one run: the inputs do not change in it.
    con.execute("SET parquet_metadata_cache = true")
    # The steps replace their tables as they go; DuckDB's automatic checkpoint (at 16 MB of WAL) ran between them
    # and rewrote what the next step replaced. One checkpoint, at close, is enough:
    # the database is built in a staging folder (analyzer/outputs/__init__.py), so a crash before it loses nothing.
    con.execute("SET checkpoint_threshold = '4GB'")
    spans_view.ensure(con, view=define_view)
    con.execute(duckdb_ddl("logs", LOGS))
    return con


# TEMP tables are faster while they fit in memory; past it DuckDB spills them uncompressed, and writing them
# compressed to the database file is faster. Above this many spans (per GB of memory limit) they are plain tables.
# The one big TEMP table is `pairs` (about 150 bytes per pair, a pair per two spans). The limit DuckDB reports for
# 1500MB is 1.3 GiB; at 10M spans a TEMP pairs stays within the 2 GB peak and is faster than a table in the file.
TEMP_SPANS_PER_GB = 10_000_000


def _temp_tables_fit(con: duckdb.DuckDBPyConnection) -> bool:
    # an in-memory database (the watch's) holds a plain table in memory as well: no need to count the spans
    if con.execute("SELECT path IS NULL FROM duckdb_databases() WHERE database_name = current_database()"
                   ).fetchone()[0]:
        return True
    limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]  # e.g. "1.3 GiB"
    units = {"KiB": 2**-20, "MiB": 2**-10, "GiB": 1, "TiB": 2**10, "KB": 1e-6, "MB": 1e-3, "GB": 1, "TB": 1e3}
    number, _, unit = limit.partition(" ")
    try:
        size_gb = float(number) * units.get(unit.strip(), 1)
    except ValueError:
        return True
    return spans_view.count(con) <= TEMP_SPANS_PER_GB * size_gb


def views_to_keep(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str | None]]:
    """Each step whose table is a TEMP table on ``con`` (so far), in pipeline order, with the DDL of the view that
    keeps it in the database file, or None when that view exists already (pairs makes its own). A step that ran as a
    plain table (an input too big for memory) is in the file already and is not listed. Asks ``con`` only: the DDL
    may then run on another cursor (``create_views``), beside the steps that follow."""
    # by database name, not `temporary`: the filter then keeps duckdb_tables() and duckdb_views() to one database's
    # entries (duckdb_views() renders every view's SQL, the spans view's included)
    temporary = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'temp'")
                 .fetchall()}
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE database_name = current_database()")
             .fetchall()}
    return [(step.name, None if step.name in views else step.keeping_view())
            for step in pipeline.steps() if step.stored == "temp" and step.name in temporary]


def create_views(con: duckdb.DuckDBPyConnection, views: list[tuple[str, str | None]]) -> list[str]:
    """Create the views ``views_to_keep`` listed; returns their names."""
    for _, ddl in views:
        if ddl is not None:
            con.execute(ddl)
    return [name for name, _ in views]


def keep_as_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Give each of the steps' TEMP tables a view of the same name in the database file, computed from ``spans`` when
    asked (as rpc_spans and clock_samples are); returns their names, in pipeline order. The TEMP tables stay until
    the connection closes: on this connection they hide the views, which hold the same rows. Called before the
    checkpoint, which then writes the views too (a view created after it would leave the close a checkpoint to do).

    The steps whose tables are big or wide run as TEMP tables: writing them to the file would cost more than computing
    them (pairs: millions of rows; denials: a row of facts per denied call). A step whose table needs more than its
    one statement would create its view itself; for the others the view is the step's query. Creating a view
    binds its statement again: ``analyze`` does that on another cursor beside the later steps
    (``views_to_keep`` then ``create_views``), and this call finds it done.
    """
    return create_views(con, views_to_keep(con))


def _read_patterns(path: Path, source: str) -> list[tuple]:
    """One pattern file's rows; any bad row is a one-line error naming the file, the line and the field."""
    rows = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in LOG_PATTERN_FIELDS[:4] if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{source}: log pattern file lacks the column {missing[0]!r} "
                                f"(columns: {', '.join(LOG_PATTERN_FIELDS)})")
            for row in reader:
                where = f"{source}:{reader.line_num}"
                name, pattern, cause = ((row.get(k) or "").strip() for k in ("name", "pattern", "cause"))
                if not name or not pattern:
                    raise UserError(f"{where}: a log pattern needs a name and a pattern")
                if cause not in contract.CAUSES or cause == "unexplained":
                    raise UserError(f"{where}: cause {cause!r} is not one of {', '.join(contract.CAUSES)}")
                try:
                    confidence = float(row.get("confidence") or "")
                except ValueError:
                    raise UserError(f"{where}: confidence {row.get('confidence')!r} is not a number") from None
                if not 0 < confidence <= 1:
                    raise UserError(f"{where}: confidence {confidence} is not in (0, 1]")
                rows.append((name, pattern, cause, confidence, (row.get("description") or "").strip(), where))
    except OSError as exc:
        raise UserError(f"{source}: cannot read log patterns ({exc.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: not a CSV file ({exc})") from None
    return rows


def load_log_patterns(con: duckdb.DuckDBPyConnection, extra_files: list[str] | tuple[str, ...] = ()) -> int:
    """Fill ``log_patterns`` (ordinal, name, pattern, cause, confidence, description, source).

    The users' files come first, in the order given, then the built-in ``queries/seeds/log_patterns.csv``; a name seen
    earlier hides a later pattern of the same name (a user file overrides a built-in pattern by naming it). The
    first pattern (by ordinal) that matches a log line decides. Patterns are RE2 regular expressions (DuckDB's
    ``regexp_matches``), matched case-insensitively anywhere in the body; a bad one is a one-line error.
    """
    builtin = Path(str(resources.files("jitrace.queries") / "seeds" / "log_patterns.csv"))
    rows: list[tuple] = []
    for path, source in [*((Path(f), f) for f in extra_files), (builtin, "queries/seeds/log_patterns.csv")]:
        rows += _read_patterns(path, source)
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row[0] not in seen:
            seen.add(row[0])
            kept.append((len(kept), *row))
    con.execute("CREATE OR REPLACE TABLE log_patterns (ordinal INTEGER, name VARCHAR, pattern VARCHAR, "
                "cause VARCHAR, confidence DOUBLE, description VARCHAR, source VARCHAR)")
    if kept:
        try:  # every pattern compiled by one query; only when one fails, each on its own to name it
            con.execute("SELECT " + ", ".join("regexp_matches('', ?, 'i')" for _ in kept), [r[2] for r in kept])
        except duckdb.Error:
            for row in kept:
                try:
                    con.execute("SELECT regexp_matches('', ?, 'i')", [row[2]])
                except duckdb.Error as exc:
                    raise UserError(f"{row[6]}: pattern {row[2]!r} ({row[1]}) is not a valid regular expression "
                                    f"({str(exc).splitlines()[0]})") from None
            raise
        # the columns as lists, zipped back by unnest (executemany runs a statement per row)
        con.execute("INSERT INTO log_patterns SELECT " + ", ".join("unnest(?)" for _ in kept[0]),
                    [list(c) for c in zip(*kept, strict=True)])
    # The patterns as constants in one macro: DuckDB compiles a constant regex once, a regex read from a column
    # once per row, far slower.
    cases = " ".join(f"WHEN regexp_matches(body, {spans_view.sql_string(row[2])}, 'i') THEN {row[0]}" for row in kept)
    con.execute("CREATE OR REPLACE MACRO log_pattern_ordinal(body) AS "
                + (f"CASE {cases} END" if kept else "NULL::INTEGER"))
    return len(kept)


@contextlib.contextmanager
def reading_inputs(found_by: str) -> Iterator[None]:
    """Turns a query's failure to read an input file (not a fault of its own SQL) into a one-line UserError naming
    ``found_by``. Span files holding the facts are read in place (spans_view.py), and the loader reads only their
    footers: a damaged page is met by the first query that reads it (a step, or the report's counts beside them).
    DuckDB reports that as an I/O or invalid-input error, or as a plain ``duckdb.Error`` (the Thrift decoder's
    exception, "Parquet file is likely corrupted"); a fault of the SQL itself has its own error class."""
    try:
        yield
    except duckdb.Error as exc:
        if type(exc) is duckdb.Error or isinstance(exc, duckdb.IOException | duckdb.InvalidInputException):
            raise UserError(f"a span file is damaged (found by {found_by}): {str(exc).splitlines()[0]}") from None
        raise


def prepare(con: duckdb.DuckDBPyConnection, *, settings: dict[str, float] | None = None,
            log_patterns: list[str] | tuple[str, ...] | None = ()) -> None:
    """What the steps need on ``con`` besides their inputs: the settings' SQL variables, the log patterns (None:
    loaded already), the macros and the seeds."""
    if log_patterns is not None:
        load_log_patterns(con, log_patterns)
    for name, value in (settings or {}).items():
        if name not in VARIABLES:
            raise ValueError(f"unknown analyzer setting {name!r}")
        con.execute(f"SET VARIABLE {name} = {float(value)!r}")
    con.execute(pipeline.macros())
    pipeline.load_seeds(con)


def run_queries(
    con: duckdb.DuckDBPyConnection,
    *,
    settings: dict[str, float] | None = None,
    progress: Callable[[str, float], None] | None = None,
    log_patterns: list[str] | tuple[str, ...] | None = (),
    only: Collection[str] | None = None,
    ready: bool = False,
) -> dict[str, float]:
    """Run every step (``only``: those named, in the pipeline's order); returns seconds per step. ``settings`` sets
    the SQL variables (e.g. jitrace_leeway_s); ``log_patterns`` are the users' pattern files, tried before the
    built-in ones (None: ``load_log_patterns`` has already run on ``con``). ``ready``: ``prepare`` has run on ``con``
    (a caller that runs steps again and again: the watch), so settings and patterns are not read again."""
    if not ready:
        prepare(con, settings=settings, log_patterns=log_patterns)
    timings: dict[str, float] = {}
    temp_ok = _temp_tables_fit(con)
    for step in pipeline.steps():
        if only is not None and step.name not in only:
            continue
        started = time.perf_counter()
        if step.compression is not None:
            con.execute("SET force_compression = ?", [step.compression])
        with reading_inputs(step.name):
            if step.python is None:
                con.execute(step.create(temp_ok=temp_ok))
            elif step.sql is None:
                step.function()(con)
            else:  # the query defines the object, the function makes it
                step.function()(con, step.kind(temp_ok=temp_ok))
        timings[step.name] = time.perf_counter() - started
        if progress is not None:
            progress(step.name, timings[step.name])
    return timings
