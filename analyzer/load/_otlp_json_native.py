"""The fast path for OTLP JSON-lines span files: ``_otlp_native.c`` reads them into Arrow columns, on every core.

The Collector's file exporter writes one ``{"resourceSpans": [...]}`` export request per line. The C reader is the
one fast path beside the Python reader (``_otlp_json``); BENCHMARKS.md holds it against msgspec. It gives exactly
the rows the Python reader gives: the file is cut into ranges of whole lines, read on a thread each (the C code
releases the GIL), and inserted in one transaction. A line holding something the C reader might read otherwise
(a bad record, a logs request, an odd spelling) raises ``Refused``, and the Python reader reads that line alone,
numbered as in the whole file, the C reader the lines around it: one odd record costs its line, not the file. Its logs,
bad records and skipped requests go back to the caller (``Loaded.rows``). A file that is not for this path (one
line, another format) is left whole to the Python reader: ``insert`` returns None. The C reader also gives the
values span_facts.sql reads, typed: its spans are stored with their facts at once (``_Reading``).

The module is optional (setup.py): where it was not built, ``AVAILABLE`` is False and the Python reader serves.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from jitrace.analyzer import schema
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import _files, _formats
from jitrace.analyzer.rows import Rows, buffers_table
from jitrace.analyzer.rows import table as rows_table
from jitrace.analyzer.steps import database, spans_view

try:
    from jitrace.analyzer.load import _otlp_native
except ImportError:  # built without a C compiler (setup.py: optional)
    _otlp_native = None

if TYPE_CHECKING:
    import pyarrow as pa

AVAILABLE = _otlp_native is not None
RANGE_BYTES = 8 << 20  # a range of lines read by one call: several per file, so that every core reads
WORKERS = max(1, min(4, os.cpu_count() or 1))
_BATCH = "jitrace_otlp_native_batch"
_HEAD_BYTES = 1 << 16  # where a compressed span file's first line names resourceSpans (else: the Python reader)

NOT_BLANK = re.compile(rb"[^ \t\n\r\x0b\x0c]")  # bytes.strip()'s whitespace: a line of only these is skipped
SPANS_KEY = b'"resourceSpans"'  # what a span file's first line names
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


@dataclass
class Loaded:
    spans: int  # spans inserted, by either reader
    rows: Rows  # what the Python reader read of the refused ranges but their spans: logs, bad records, skipped
    python_ranges: int = 0  # how many pieces (a line, or lines) the C reader left to the Python reader
    without_facts: int = 0  # spans the C reader read whose facts it left to span_facts.sql (into span_rows)


def insert(con: duckdb.DuckDBPyConnection, path: Path) -> Loaded | None:
    """Insert the spans of ``path``: with their facts into ``span_fact_rows`` (in the order read), or, the few whose
    facts are left to span_facts.sql, into ``span_rows`` (spans_view.py); what was read, or None when the file is
    not one this path reads (nothing inserted: the caller reads it with the Python reader)."""
    if _otlp_native is None:
        return None
    try:
        if database.in_transaction(con):
            return None
        if _files.is_compressed(_files.peek(path)) and SPANS_KEY not in _files.head(path, _HEAD_BYTES):
            return None  # a compressed file of another kind is not decompressed twice (here, then by its reader)
        with contents(path) as data:
            if not spans_lines(data):
                return None  # another format, logs, or one line (a whole JSON document to _formats)
            return _insert(con, path, data)
    except (OSError, ValueError, UserError):  # ValueError: Refused, an unencodable path, an empty file mapped
        return None


def _insert(con: duckdb.DuckDBPyConnection, path: Path, data: bytes | mmap.mmap) -> Loaded | None:
    cur = database.cursor(con)  # a connection of its own: the rollback below touches nothing of the caller's
    reading = None
    try:
        cur.execute("SET enable_progress_bar = false")  # one statement reads the whole file: no bar on the terminal
        cur.execute("BEGIN TRANSACTION")
        try:
            reading = _Reading(con, path, data)
            while not reading.done:
                # one statement inserts the spans of many ranges, streamed as they are read (the C reader's threads
                # read on while DuckDB inserts); it ends when the file does, or to store what waits for span_rows
                cur.register(_BATCH, reading.batches())
                try:
                    cur.execute(f"INSERT INTO {spans_view.FACTS_TABLE} BY NAME "
                                f"SELECT * FROM ({reading.facts.format(_BATCH)})")
                finally:
                    cur.unregister(_BATCH)
                if reading.failed is not None:
                    raise reading.failed
                if reading.declined:
                    cur.execute("ROLLBACK")
                    return None
                for batch in reading.take_waiting():
                    _insert_batch(cur, spans_view.ROWS_TABLE, batch)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        if reading.records < 2:  # one line is a whole JSON document to _formats (records numbered path#N)
            cur.execute("ROLLBACK")
            return None
        cur.execute("COMMIT")
        return reading.loaded
    except duckdb.Error:
        return None
    finally:
        if reading is not None:
            reading.results.close()  # the readers' threads stop (their work not started yet is dropped)
        cur.close()


def _insert_batch(cur: duckdb.DuckDBPyConnection, table: str, batch: pa.Table) -> None:
    cur.register(_BATCH, batch)
    try:
        cur.execute(f"INSERT INTO {table} SELECT * FROM {_BATCH}")
    finally:
        cur.unregister(_BATCH)


class _Reading:
    """One file through the C reader, as a stream of Arrow batches for one INSERT statement at a time: the spans
    the C reader read with the values span_facts.sql reads (spans_view.fact_inputs: ``r`` and ``a``, typed), over
    which ``facts`` computes the facts. What goes to ``span_rows`` instead (the spans of a range the Python reader
    read, and spans whose facts are left to span_facts.sql over their JSON: see _otlp_native.c) waits, up to
    WAITING_ROWS, and is stored between statements (``take_waiting``)."""

    WAITING_ROWS = 200_000

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, data: bytes | mmap.mmap) -> None:
        import pyarrow as pa

        self.path, self.data = path, data
        self.inputs = spans_view.fact_inputs(con)
        spec = (_keys(self.inputs.resource), _keys(self.inputs.attributes))
        self.facts = spans_view.facts_of_inputs_sql(f"(SELECT *, NULL::{self.inputs.checks} AS checks FROM {{}})")
        self.schema = schema.arrow(schema.SPANS).append(pa.field("r", self.inputs.resource)).append(
            pa.field("a", self.inputs.attributes))
        self.results = _parsed(data, f"{path}:".encode(), spec)  # the Python reader's source: path:LINE
        self.loaded = Loaded(0, Rows())
        self.kind: str | None = None  # what the file holds, as the Python reader decides it: from the first record
        self.records = 0
        self.waiting: list[pa.Table] = []
        self.waiting_rows = 0
        self.done = self.declined = False
        self.failed: BaseException | None = None  # raised inside the stream: re-raised after the statement

    def batches(self) -> pa.RecordBatchReader:
        import pyarrow as pa

        return pa.RecordBatchReader.from_batches(self.schema, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        try:
            while self.waiting_rows < self.WAITING_ROWS:
                result = next(self.results, None)
                if result is None:
                    self.done = True
                    return
                table = self._read(*result)
                if table is not None:
                    yield from table.to_batches()
        except BaseException as exc:  # DuckDB would report it as its own error: kept, and the stream ends
            self.failed, self.done = exc, True
        if self.declined:
            self.done = True

    def _read(self, parsed: tuple | None, refused: tuple[int, int, int] | None) -> pa.Table | None:
        data = self.data
        if refused is not None and self.kind is None and (refused[1] == len(data) or not first_line_json(data)):
            # the first line is not a record the C reader read: whether the file is JSON lines at all, a whole
            # document or no JSON, is the Python reader's to say, for the whole file (unless line 1 is JSON: then
            # the Python reader reads the file as lines, and this range alone is its)
            self.declined = True
            self.results.close()
            return None
        loaded = self.loaded
        if refused is not None:  # line 1 is JSON: the Python reader reads this range of lines
            start, end, first_line = refused
            text = bytes(data[start:end]).decode("utf-8", errors="replace")
            self.kind = _formats.read_lines(self.path, text, loaded.rows, first_line=first_line, kind=self.kind)
            loaded.python_ranges += 1
            self.records += 2  # a range of this path is never the file's only line (spans_lines)
            loaded.spans += len(loaded.rows.spans)
            self._wait(rows_table(loaded.rows.spans, schema.SPANS))
            loaded.rows.spans = []
            return None
        records, spans, columns, fact_columns, (bitmap, inexact) = parsed
        self.records += records
        self.kind = self.kind or ("otlp" if records else None)
        loaded.spans += spans
        if not spans:
            return None
        import pyarrow as pa

        table = buffers_table(spans, columns)
        n = len(self.inputs.resource)
        batch = table.append_column("r", _struct(self.inputs.resource, spans, fact_columns[:n])).append_column(
            "a", _struct(self.inputs.attributes, spans, fact_columns[n:]))
        if inexact:
            import pyarrow.compute as pc  # here: its import is a fixed cost, and most files have no such span

            loaded.without_facts += inexact
            mask = pa.Array.from_buffers(pa.bool_(), spans, [None, pa.py_buffer(bitmap)])
            self._wait(table.filter(mask))
            batch = batch.filter(pc.invert(mask))
        return batch

    def _wait(self, table: pa.Table) -> None:
        if table.num_rows:
            self.waiting.append(table)
            self.waiting_rows += table.num_rows

    def take_waiting(self) -> list[pa.Table]:
        waiting, self.waiting, self.waiting_rows = self.waiting, [], 0
        return waiting


_TYPE_CODES = {"string": 0, "double": 1, "int64": 2}  # the C reader's codes; 3: a list of strings


def _keys(struct: pa.StructType) -> tuple[tuple[bytes, int], ...]:
    """(key as the JSON text spells it, type code) of each field of ``struct``, for ``_otlp_native.parse``."""
    import pyarrow as pa

    out = []
    for field in struct:
        kind = field.type
        code = 3 if pa.types.is_list(kind) and pa.types.is_string(kind.value_type) else _TYPE_CODES.get(str(kind))
        if code is None:
            raise TypeError(f"span_fact_inputs.sql: {field.name}: {kind} is not a type the C reader gives")
        out.append((json.dumps(field.name, ensure_ascii=False).encode(), code))
    return tuple(out)


def _struct(struct: pa.StructType, rows: int, columns: list) -> pa.StructArray:
    """The C reader's fact columns as a struct array of ``struct`` (no copy)."""
    import pyarrow as pa

    arrays = []
    for field, (validity, nulls, offsets, values) in zip(struct, columns, strict=True):
        kind = field.type
        valid = None if validity is None else pa.py_buffer(validity)
        if pa.types.is_list(kind):
            child_offsets, child_values = values
            children = memoryview(offsets).cast("i")[-1] if rows else 0
            child = pa.Array.from_buffers(kind.value_type, children,
                                          [None, pa.py_buffer(child_offsets), pa.py_buffer(child_values)])
            arrays.append(pa.Array.from_buffers(kind, rows, [valid, pa.py_buffer(offsets)], null_count=nulls,
                                                children=[child]))
        elif offsets is None:
            arrays.append(pa.Array.from_buffers(kind, rows, [valid, pa.py_buffer(values)], null_count=nulls))
        else:
            arrays.append(pa.Array.from_buffers(kind, rows, [valid, pa.py_buffer(offsets), pa.py_buffer(values)],
                                                null_count=nulls))
    return pa.StructArray.from_arrays(arrays, fields=list(struct))


def _parsed(data: bytes | mmap.mmap, prefix: bytes, spec: tuple):
    """``_otlp_native.parse`` of each range of lines, in file order, ``WORKERS`` ranges read at once: (its result,
    None), or (None, (start, end, first line)) for lines it refused: a range it refused is read again around the
    line it refused (``_around``), so that the Python reader reads that line alone."""
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="jitrace-otlp-native") as pool:
        pending: deque[tuple[Future, tuple[int, int, int]]] = deque()
        release = Release(data)

        def results(future: Future, where: tuple[int, int, int]):
            try:
                yield future.result(), None
            except _otlp_native.Refused as refused:
                yield from _around(data, where, refused, prefix, spec)

        try:
            for where in _ranges(data):
                pending.append((pool.submit(_otlp_native.parse, data, *where, prefix, spec), where))
                if len(pending) > WORKERS:
                    future, where_done = pending.popleft()
                    yield from results(future, where_done)
                    release.upto(where_done[1])
            while pending:
                future, where_done = pending.popleft()
                yield from results(future, where_done)
                release.upto(where_done[1])
        finally:
            for future, _ in pending:
                future.cancel()


def _around(data: bytes | mmap.mmap, where: tuple[int, int, int], refused: Exception, prefix: bytes, spec: tuple):
    """A range the C reader refused, as pieces in order: the lines before the line it refused (read again by the C
    reader, which read them without a refusal), that line for the Python reader (None, (start, end, its number)),
    and the lines after (read again, a refusal there split alike)."""
    start, end, first_line = where
    while True:
        _, line, line_from, line_to = refused.args
        if not start <= line_from < line_to <= end:  # no line to blame (memory): the rest is the Python reader's
            yield None, (start, end, first_line)
            return
        if line_from > start:
            yield _otlp_native.parse(data, start, line_from, first_line, prefix, spec), None
        yield None, (line_from, line_to, line)
        start, first_line = line_to, line + 1
        if start >= end:
            return
        try:
            yield _otlp_native.parse(data, start, end, first_line, prefix, spec), None
            return
        except _otlp_native.Refused as again:
            refused = again


def _ranges(data: bytes | mmap.mmap):
    """(start, end, number of the first line) of ranges of whole lines, about RANGE_BYTES each; a byte order mark
    before line 1 is skipped, as ``_formats.read`` skips it."""
    start = len(_files.BOM) if data[:len(_files.BOM)] == _files.BOM else 0
    line = 1
    while start < len(data):
        cut = data.find(b"\n", start + RANGE_BYTES)
        end = len(data) if cut < 0 else cut + 1
        yield start, end, line
        line += _otlp_native.newlines(data, start, end)
        start = end


@contextlib.contextmanager
def contents(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The file's bytes: a plain file mapped (nothing read into memory), a compressed one decompressed as the Python
    reader does it (the same bytes, or its error)."""
    if _files.is_compressed(_files.peek(path)):
        yield _files.read_bytes(path)
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data


def spans_lines(data: bytes | mmap.mmap) -> bool:
    """Whether the first non-blank line names resourceSpans and another non-blank line follows (one line is a whole
    JSON document to ``_formats``: the check would find so too, after a pass over the file)."""
    first = NOT_BLANK.search(data)
    if first is None:
        return False
    end = data.find(b"\n", first.start())
    return (end >= 0 and data.find(SPANS_KEY, first.start(), end) >= 0
            and NOT_BLANK.search(data, end) is not None)


def first_line_json(data: bytes | mmap.mmap) -> bool:
    """Whether the first non-blank line (after a byte order mark) is a JSON object or array by itself: then the
    Python reader reads the file as JSON lines (the whole text is "Extra data" to json.loads: spans_lines saw another
    non-blank line), and a range of it can be read apart from the rest, line 1's included."""
    start = len(_files.BOM) if data[:len(_files.BOM)] == _files.BOM else 0
    first = NOT_BLANK.search(data, start)
    if first is None:
        return False
    end = data.find(b"\n", first.start())
    line = bytes(data[start:len(data) if end < 0 else end]).decode("utf-8", errors="replace")
    try:
        return isinstance(json.loads(line), (dict, list))
    except (ValueError, RecursionError):
        return False


class Release:
    """Drops the pages of a mapped file that are read: they leave this process's resident memory (they stay in the
    page cache), else a big file mapped whole would count in it. Bytes (a decompressed file) are left as they are."""

    def __init__(self, data: bytes | mmap.mmap) -> None:
        self._data = data if isinstance(data, mmap.mmap) and _DONTNEED is not None else None
        self.done = 0  # the pages before this offset are released

    def upto(self, end: int) -> None:
        if self._data is None:
            return
        end -= end % mmap.PAGESIZE
        if end > self.done:
            self._data.madvise(_DONTNEED, self.done, end - self.done)
            self.done = end
