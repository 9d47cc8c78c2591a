"""The fast path for OTLP JSON-lines span files: ``_otlp_native.c`` reads them into Arrow columns, on every core.

The Collector's file exporter writes one ``{"resourceSpans": [...]}`` export request per line. The C reader is the
one fast path beside the Python reader (``_otlp_json``); BENCHMARKS.md holds it against msgspec. It gives exactly
the rows the Python reader gives: the file is cut into ranges of whole lines, read on a thread each (the C code
releases the GIL), and inserted in one transaction. A range holding something the C reader might read otherwise
(a bad record, a logs request, an odd spelling) raises ``Refused``, and the Python reader reads that range alone,
numbering its lines as it numbers the whole file's: one odd record costs its range, not the whole file. Its logs,
bad records and skipped requests go back to the caller (``Loaded.rows``). A file that is not for this path (one
line, another format) is left whole to the Python reader: ``insert`` returns None.

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
from jitrace.analyzer.rows import Rows
from jitrace.analyzer.rows import table as rows_table
from jitrace.analyzer.steps import database

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
    python_ranges: int = 0  # how many ranges the C reader refused


def insert(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> Loaded | None:
    """Insert the spans of ``path`` into ``table``; what was read, or None when the file is not one this path reads
    (nothing inserted: the caller reads it with the Python reader)."""
    if _otlp_native is None:
        return None
    try:
        if in_transaction(con):
            return None
        if _files.is_compressed(_files.peek(path)) and SPANS_KEY not in _files.head(path, _HEAD_BYTES):
            return None  # a compressed file of another kind is not decompressed twice (here, then by its reader)
        with contents(path) as data:
            if not spans_lines(data):
                return None  # another format, logs, or one line (a whole JSON document to _formats)
            return _insert(con, path, table, data)
    except (OSError, ValueError, UserError):  # ValueError: Refused, an unencodable path, an empty file mapped
        return None


def _insert(con: duckdb.DuckDBPyConnection, path: Path, table: str, data: bytes | mmap.mmap) -> Loaded | None:
    prefix = f"{path}:".encode()  # the Python reader's source: path:LINE
    cur = database.cursor(con)  # a connection of its own: the rollback below touches nothing of the caller's
    loaded = Loaded(0, Rows())
    kind = None  # what the file holds, as the Python reader decides it: from the first line that parses
    try:
        cur.execute("BEGIN TRANSACTION")
        records = 0
        try:
            for parsed, refused in _parsed(data, prefix):
                if refused is not None and kind is None and (refused[1] == len(data) or not first_line_json(data)):
                    # the first line is not a record the C reader read: whether the file is JSON lines at all, a
                    # whole document or no JSON, is the Python reader's to say, for the whole file (unless line 1
                    # is JSON: then the Python reader reads the file as lines, and this range alone is its)
                    cur.execute("ROLLBACK")
                    return None
                if refused is not None:  # line 1 is JSON: the Python reader reads this range of lines
                    start, end, first_line = refused
                    text = bytes(data[start:end]).decode("utf-8", errors="replace")
                    kind = _formats.read_lines(path, text, loaded.rows, first_line=first_line, kind=kind)
                    loaded.python_ranges += 1
                    records += 2  # a range of this path is never the file's only line (spans_lines)
                    got_spans, batch = len(loaded.rows.spans), rows_table(loaded.rows.spans, schema.SPANS)
                    loaded.rows.spans = []
                else:
                    got_records, got_spans, columns = parsed
                    records += got_records
                    kind = kind or ("otlp" if got_records else None)
                    batch = _table(got_spans, columns) if got_spans else None
                loaded.spans += got_spans
                if got_spans:
                    cur.register(_BATCH, batch)
                    try:
                        cur.execute(f"INSERT INTO {table} SELECT * FROM {_BATCH}")
                    finally:
                        cur.unregister(_BATCH)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        if records < 2:  # one line is a whole JSON document to _formats (records numbered path#N)
            cur.execute("ROLLBACK")
            return None
        cur.execute("COMMIT")
        return loaded
    except duckdb.Error:
        return None
    finally:
        cur.close()


def _parsed(data: bytes | mmap.mmap, prefix: bytes):
    """``_otlp_native.parse`` of each range of lines, in file order, ``WORKERS`` ranges read at once: (its result,
    None), or (None, (start, end, first line)) for a range it refused."""
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="jitrace-otlp-native") as pool:
        pending: deque[tuple[Future, tuple[int, int, int]]] = deque()
        release = Release(data)

        def result(future: Future, where: tuple[int, int, int]):
            try:
                return future.result(), None
            except _otlp_native.Refused:
                return None, where

        try:
            for where in _ranges(data):
                pending.append((pool.submit(_otlp_native.parse, data, *where, prefix), where))
                if len(pending) > WORKERS:
                    future, where_done = pending.popleft()
                    yield result(future, where_done)
                    release.upto(where_done[1])
            while pending:
                future, where_done = pending.popleft()
                yield result(future, where_done)
                release.upto(where_done[1])
        finally:
            for future, _ in pending:
                future.cancel()


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


def _table(rows: int, columns: list[tuple]) -> pa.Table:
    """The C reader's buffers as an Arrow table of schema.SPANS (no copy)."""
    import pyarrow as pa

    arrow_schema = schema.arrow(schema.SPANS)
    arrays = []
    for field, (validity, nulls, offsets, values) in zip(arrow_schema, columns, strict=True):
        buffers = [None if validity is None else pa.py_buffer(validity)]
        buffers += [pa.py_buffer(values)] if offsets is None else [pa.py_buffer(offsets), pa.py_buffer(values)]
        arrays.append(pa.Array.from_buffers(field.type, rows, buffers, null_count=nulls))
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


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


def in_transaction(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the caller holds a transaction open: then two statements run in the same one. (A fast path inserts on
    a cursor of its own, and commits: the caller's open snapshot would not see those rows.)"""
    first, second = (con.execute("SELECT current_transaction_id()").fetchall()[0][0] for _ in range(2))
    return first == second


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
