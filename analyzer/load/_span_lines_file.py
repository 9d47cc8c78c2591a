"""What both fast paths for OTLP JSON-lines span files share (``_otlp_json_native``, the C reader, and
``_otlp_json_duckdb``, DuckDB's JSON reader): the file's bytes, whether it is one for them, whether the caller holds a
transaction open, and the release of the pages they have read."""

from __future__ import annotations

import contextlib
import mmap
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb

from jitrace.analyzer.load import _files

NOT_BLANK = re.compile(rb"[^ \t\n\r\x0b\x0c]")  # bytes.strip()'s whitespace: a line of only these is skipped
SPANS_KEY = b'"resourceSpans"'  # what a span file's first line names
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


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
