"""Load trace and log files of any supported format into DuckDB's normalized ``spans`` and ``logs`` tables.

``load_into(con, inputs)`` takes files, folders (recursive) and globs, formats mixed; each file's format is detected
from its content. Supported: jitrace Parquet (``jitrace collect``), OTLP JSON (one object or JSON lines; hex or base64
ids; int or string enums; ``.gz``/``.zst``), OTLP protobuf files (length-prefixed), Jaeger JSON, Zipkin v2 JSON,
OTLP JSON logs, JSON-lines application logs with trace context, and OPA decision logs.

A record that cannot be read is counted and reported (file, position, field) and the rest loads; ``strict=True``
makes it an error. OTLP requests of other signals (metrics, profiles: the Collector's file exporter may write them
into the same file) are skipped and counted (``skipped_requests``). A file that cannot be read at all is a
``UserError``; so is a file in no known format named itself, while one found in a folder or by a pattern is skipped
and counted (``skipped_files``). A span is one row however many times it was seen (``duplicate_spans``).

OTLP JSON-lines span files (the Collector's file exporter) are read by a reader in C on every core
(``_otlp_json_native``) exactly as the Python reader would: a range of lines with something it does not read
exactly (a bad record, a logs request) is read by the Python reader alone. Any other file, or every file where it
was not built, is read in Python.

Positions, in problems and in the ``source`` column: ``path:LINE`` (JSON lines; ``path:LINE#K`` for the K-th record
of that line), ``path#N`` (the N-th record of a whole JSON document), ``path@OFFSET`` (a protobuf message), and the
file itself for Parquet. Folders are read recursively, skipping hidden and ``_``-prefixed names, notes (``.md``,
``.txt``) and ``*.tmp`` (a receiver's unfinished, never acknowledged writes).
"""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from jitrace.analyzer import schema
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import _files, _parquet
from jitrace.analyzer.steps import spans_view
from jitrace.collect import compact

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["LoadReport", "load_into"]



@dataclass
class LoadReport:
    spans: int = 0
    logs: int = 0
    bad_records: int = 0
    problems: list[str] = field(default_factory=list)  # one line each: "file:position: field: what"
    skipped_requests: int = 0  # OTLP export requests of signals jitrace does not read (metrics, profiles)
    files: int = 0
    duplicate_spans: int = 0  # copies of a span (trace id, span id, kind) already loaded: dropped
    spans_without_time: int = 0  # spans without a start or an end (loaded; no clock sample)
    skipped_files: int = 0  # files of no known format inside a folder
    skipped_notes: list[str] = field(default_factory=list)  # the first few of them: "file: what it is"
    progress: Callable[[str], None] | None = None  # told how far a long load is (PROGRESS_EVERY_S)
    started: float = field(default_factory=time.monotonic)
    said: float = 0.0

    def tick(self) -> None:
        """Rows were inserted: once the load has taken PROGRESS_EVERY_S, say so, at most that often."""
        now = time.monotonic()
        if self.progress is None or now - max(self.started, self.said) < PROGRESS_EVERY_S:
            return
        self.said = now
        rate = self.spans / (now - self.started)
        self.progress(f"loading: {self.spans:,} spans and {self.logs:,} logs so far from {self.files} file(s) "
                      f"({rate:,.0f} spans/s)")


PROGRESS_EVERY_S = 2.0


def load_into(con: duckdb.DuckDBPyConnection, inputs: list[str], *, strict: bool = False,
              progress: Callable[[str], None] | None = None, follow_symlinks: bool = False) -> LoadReport:
    """Create (if needed) and append to ``spans`` and ``logs`` from ``inputs``; see the module's docstring.
    ``progress`` hears how far a load that takes longer than PROGRESS_EVERY_S is; ``follow_symlinks``: folder walks
    enter symbolic links too."""
    # Parsing JSON creates millions of small dicts; the cyclic GC would rescan them all again and again (3-4x
    # slower) and none of them form cycles. Off while loading, back to what it was after.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_into(con, inputs, strict, progress, follow_symlinks)
    finally:
        if was_enabled:
            gc.enable()


def _load_into(con: duckdb.DuckDBPyConnection, inputs: list[str], strict: bool,
               progress: Callable[[str], None] | None, follow_symlinks: bool) -> LoadReport:
    spans_view.ensure(con, view=False)  # defined at the end, over what was loaded
    con.execute(schema.duckdb_ddl("logs", schema.LOGS))
    named: set[Path] = set()  # files named themselves: of no known format, an error (in a folder, skipped)
    files = _files.expand(list(inputs), follow_symlinks=follow_symlinks, named=named)
    # a receiver that crashed while compacting may have left files a compacted file already holds: never twice
    # (only files a folder walk found: a file named on the command line is read whatever a compacted file claims)
    replaced = compact.replaced_files(con, [f for f in files if f.name.startswith(compact.PREFIX)]) - named
    files = [f for f in files if f not in replaced]
    report = LoadReport(files=len(files), progress=progress)
    parquet: dict[tuple[str, bool], list[Path]] = defaultdict(list)
    schema_of_dir: dict[Path, tuple[str, bool]] = {}
    text_files = []
    for path in files:
        if _files.peek(path) == _parquet.MAGIC:
            # One footer read per folder: the collector writes thousands of files of one schema into each
            kind = schema_of_dir.get(path.parent)
            if kind is None:
                kind = schema_of_dir[path.parent] = _parquet.table_of(con, path)
            parquet[kind].append(path)
        else:
            text_files.append(path)
    if text_files:  # imported only then: a run on Parquet alone does without its readers' imports
        from jitrace.analyzer.load import _text

        _text.load(con, text_files, strict, report, named)
    for (name, has_source), group in parquet.items():
        try:
            n = _parquet.insert(con, name, group, has_source)
        except UserError:
            for path in group:  # a file unlike its folder's first: name it
                if _parquet.table_of(con, path) != (name, has_source):
                    raise UserError(f"{path}: Parquet of another schema than {group[0]} in the same folder") from None
            raise
        if name == "spans":
            report.spans += n
        else:
            report.logs += n
    # over the files read in place, and span_rows if rows were copied in (stored with their facts, redacted)
    spans_view.define(con)
    _one_row_per_span(con, report)
    if report.bad_records > len(report.problems):
        report.problems.append(f"... and {report.bad_records - len(report.problems)} more bad records")
    return report


def _one_row_per_span(con: duckdb.DuckDBPyConnection, report: LoadReport) -> None:
    """Drop the copies of a span seen more than once (one file twice, an OTLP export beside a Jaeger download of the
    same traces): a span is its trace id, span id and kind (Zipkin's shared spans give the client and the server one
    id). The copy kept has a start and an end if any has, then the most attributes, resource attributes and events,
    then the first source; copies in one request (one source) are then ordered by their content, so that the copy kept
    never depends on the order the rows were stored in. Also counts the spans without a time.

    One scan of span id and kind (random 64-bit ids: the trace id, twice as wide to decode, rarely tells more) says
    whether any span may be there twice, by a 64-bit hash (a collision only costs the exact pass below); only then
    are the keys compared whole and the spans rewritten, into ``span_rows`` (the files read in place are copied too:
    the view must not list a dropped copy).
    """
    from jitrace.analyzer.steps.session import reading_inputs

    with reading_inputs("the check for spans seen twice"):  # the first read of a compacted file's pages
        total, twice, untimed = _hashed_twice(con)
    report.spans_without_time = untimed
    if not twice:
        return
    base = ", ".join(schema.SPANS.names)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE jitrace_one_copy AS
        SELECT {base} FROM spans
        QUALIFY row_number() OVER (
            PARTITION BY trace_id, span_id, kind
            ORDER BY start_ns IS NOT NULL AND end_ns IS NOT NULL DESC,
                     coalesce(len(json_keys(attributes)), 0) + coalesce(len(json_keys(resource)), 0)
                     + coalesce(json_array_length(events), 0) DESC,
                     source, attributes, resource, events, links, name, status_code, status_message,
                     start_ns, end_ns, parent_span_id, scope, service) = 1""")
    try:
        kept, untimed = con.execute("SELECT count(*), count(*) FILTER (WHERE start_ns IS NULL OR end_ns IS NULL) "
                                    "FROM jitrace_one_copy").fetchone()
        if kept == total:
            return
        con.execute(f"DELETE FROM {spans_view.ROWS_TABLE}")
        con.execute(f"DELETE FROM {spans_view.FILES_TABLE}")
        con.execute(f"DELETE FROM {spans_view.FACTS_TABLE}")
        con.execute(f"INSERT INTO {spans_view.ROWS_TABLE} SELECT * FROM jitrace_one_copy")
    finally:
        con.execute("DROP TABLE jitrace_one_copy")
    spans_view.define(con)  # the copies kept, with their facts
    report.duplicate_spans = total - kept
    report.spans -= report.duplicate_spans
    report.spans_without_time = untimed  # counted as above, over the copies kept
    spans_view.define(con)


# From this many spans the hashes are sorted (numpy) rather than counted distinct by DuckDB, whose hash table of every
# span costs more than the sort, numpy's and pyarrow's imports included; below it, a run that has not imported them
# (compacted files alone) does without them.
SORT_FROM = 2_000_000


def _sorts(spans: int) -> bool:
    """Whether the check for spans seen twice sorts the hashes (else DuckDB counts them distinct)."""
    import sys

    return spans >= SORT_FROM or {"numpy", "pyarrow"} <= sys.modules.keys()


def _numbers(column: pa.Array, dtype: type) -> np.ndarray:
    """A pyarrow array of numbers without NULLs as a numpy array over its data buffer (no copy)."""
    import numpy as np

    assert column.null_count == 0
    size = np.dtype(dtype).itemsize
    return np.frombuffer(column.buffers()[1], dtype=dtype, count=len(column), offset=column.offset * size)


def _hashed_twice(con: duckdb.DuckDBPyConnection) -> tuple[int, bool, int]:
    """(spans, whether a hash of span id and kind is there twice, spans without a start or an end)."""
    expected = spans_view.count(con)
    if not _sorts(expected):
        total, distinct, untimed = con.execute(
            "SELECT count(*), count(DISTINCT hash(span_id, kind)), "
            "count(*) FILTER (WHERE start_ns IS NULL OR end_ns IS NULL) FROM spans").fetchone()
        return total, distinct != total, untimed
    import numpy as np

    hashes = np.empty(expected, dtype=np.uint64)
    total = untimed = 0
    # both columns numbers that are never NULL, read by numpy from their Arrow buffers: pyarrow's to_numpy imports
    # pandas
    reader = con.sql("SELECT hash(span_id, kind) AS h, (start_ns IS NULL OR end_ns IS NULL)::UTINYINT AS untimed "
                     "FROM spans").to_arrow_reader(1 << 20)
    for batch in reader:
        n = batch.num_rows
        if total + n > len(hashes):  # more rows than the count said (it is exact): room made all the same
            hashes = np.resize(hashes, max(2 * len(hashes), total + n))
        hashes[total:total + n] = _numbers(batch.column(0), np.uint64)
        untimed += int(np.count_nonzero(_numbers(batch.column(1), np.uint8)))
        total += n
    hashes = hashes[:total]
    hashes.sort()
    return total, bool(total > 1 and (hashes[1:] == hashes[:-1]).any()), untimed
