"""The fast path for OTLP JSON-lines span files: DuckDB's JSON reader (C++, every core) instead of Python's.

The Collector's file exporter writes one ``{"resourceSpans": [...]}`` export request per line. Python parses such
a file at ~20 µs a span; ``otlp_json_spans.sql`` reads it with ``read_json`` and inserts the same rows straight into
the spans table, streaming (nothing is held in Python). It gives exactly the rows ``_otlp_json`` gives or none:
any file it cannot read exactly is left to the Python reader, which loads it and reports its bad records as always.
So a file takes this path only when all of these hold (else ``insert`` returns None and has changed nothing):

- it is big enough that a few SQL statements cost less than Python (``MIN_BYTES``, decompressed: plain, gzip or
  zstd), its first line names resourceSpans, and it holds two non-blank lines or more (one line is a whole JSON
  document to ``_formats``, its records numbered ``path#N``);
- no line holds what DuckDB's parser reads otherwise than Python's (trailing commas, nan/inf, null) nor anything the
  SQL does not read (see its header): the SQL fails, in a transaction that is rolled back;
- the caller has no transaction open (a failed statement would abort it), and the system has /dev/fd (below).

Line numbers (the ``path:LINE`` of the ``source`` column): DuckDB's WITH ORDINALITY would number the records, but on
one thread, and it skips blank lines. So a thread here feeds DuckDB the file through a pipe, each non-blank line N
as ``{"l":N,"r":<line>}``, numbered as ``_formats.read_lines`` numbers them; DuckDB parses the pipe on every core.

Token redaction: the Python reader does not redact span attributes (only log bodies and attributes, which stay on
the Python path: a line with resourceLogs fails here), so neither does this path; the equivalence tests would see it
if one of the two started to.
"""

from __future__ import annotations

import contextlib
import functools
import json
import mmap
import os
import threading
from importlib import resources
from pathlib import Path

import duckdb

from jitrace.analyzer import database
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import _files, _otlp_json
from jitrace.analyzer.load._span_lines_file import NOT_BLANK, Release, contents, in_transaction, spans_lines
from jitrace.analyzer.spans_view import sql_string

try:
    import fcntl
except ImportError:  # not on Windows, which has no /dev/fd either: there the Python reader reads every file
    fcntl = None

MIN_BYTES = 16 << 20  # below this the Python reader is about as fast (planning the SQL takes ~50 ms)
MAX_LINE_BYTES = 16 << 20  # DuckDB reads a record whole (and a buffer per thread): a longer line goes to Python
_WRITE_BYTES = 1 << 20
_RELEASE_BYTES = 64 << 20


@functools.cache
def _sections() -> dict[str, str]:
    """otlp_json_spans.sql's sections, the placeholders of `insert` filled."""
    text = (resources.files(__package__) / "otlp_json_spans.sql").read_text()
    out = {}
    for part in text.split("-- @section ")[1:]:
        name, _, body = part.partition("\n")
        out[name.strip()] = body
    key_values = " ".join(" ".join(line.split()) for line in out.pop("key_values").splitlines()
                          if line.strip() and not line.startswith("--"))
    out["insert"] = (out["insert"].replace("{key_values}", key_values)
                     .replace("{kind}", _enum_sql("s.kind", _otlp_json._KINDS))
                     .replace("{status_code}", _enum_sql("s.status.code", _otlp_json._STATUS)))
    return out


def _enum_sql(leaf: str, table: dict) -> str:
    """A CASE from an enum table of the Python reader (int and string keys): the JSON text of a key is what
    read_json gives for that value; an absent value is the enum's 0 (its default there); any other is NULL."""
    whens = " ".join(f"WHEN {sql_string(json.dumps(key))} THEN {sql_string(name)}" for key, name in table.items())
    return f"CASE WHEN {leaf} IS NULL THEN {sql_string(table[0])} ELSE CASE {leaf}::VARCHAR {whens} END END"


def insert(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> int | None:
    """Insert the spans of ``path`` into ``table``; their count, or None when the file is not one this path reads
    exactly (nothing inserted: the caller reads it with the Python reader)."""
    try:
        # a compressed file's size is known once decompressed (OTLP JSON shrinks 10 to 30 times)
        if path.stat().st_size < MIN_BYTES // 64 or not os.path.isdir("/dev/fd") or in_transaction(con):
            return None
        with contents(path) as data:
            if len(data) < MIN_BYTES or not spans_lines(data):
                return None  # small, another format, logs or one line: not worth a pass over the file
            return _insert(con, path, table, data)
    except (OSError, ValueError, UserError):
        return None  # the Python reader names the problem (ValueError: an empty file cannot be mapped)


def _insert(con: duckdb.DuckDBPyConnection, path: Path, table: str, data: bytes | mmap.mmap) -> int | None:
    sql = _sections()
    # A cursor is a connection of its own to the same database: the macros stay out of the caller's connection
    cur = database.cursor(con)
    try:
        _run(cur, sql["macros"])
        # The check reads the very lines the insert reads (not the file again: it may have grown since)
        with _Feeder(data, wrap=False) as feeder:
            ((records, suspicious, events_or_links),) = _run(cur, sql["check"],
                                                             {"lines": feeder.path, "max_line": MAX_LINE_BYTES})
        # one record per line, none odd, and two lines or more (one line is a whole document to _formats)
        if not feeder.done or records != feeder.lines or suspicious or records < 2:
            return None
        _run(cur, sql["events_links" if events_or_links else "no_events_links"])
        _run(cur, "BEGIN TRANSACTION")
        try:
            with _Feeder(data, wrap=True) as feeder:
                ((count,),) = _run(cur, sql["insert"].replace("{table}", table),
                                   {"lines": feeder.path, "max_line": MAX_LINE_BYTES, "path": str(path)})
            if not feeder.done:
                raise duckdb.InvalidInputException("otlp fast path: the lines were not all fed")
        except BaseException:
            _run(cur, "ROLLBACK")
            raise
        _run(cur, "COMMIT")
        return count
    except duckdb.Error:
        return None
    finally:
        cur.close()


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> list[tuple]:
    """Every row: a result left unread would keep the connection busy for the caller's next statement."""
    return con.execute(sql, params).fetchall()


class _Feeder:
    """A thread writing the non-blank lines of ``data`` into a pipe, numbered as ``_formats.read_lines`` numbers
    them (a byte order mark before line 1 dropped, as ``_formats.read`` does): as they are, or line N wrapped as
    ``{"l":N,"r":<line>}``. ``path`` names the pipe's read end for DuckDB; ``lines`` counts the lines written,
    ``done`` says whether all were. If the thread fails, it writes a line DuckDB cannot parse, so that the statement
    fails instead of reading part of the file."""

    def __init__(self, data: bytes | mmap.mmap, *, wrap: bool) -> None:
        self._data = data
        self._wrap = wrap
        self._read, self._write = os.pipe()
        with contextlib.suppress(OSError, AttributeError):  # Linux: a bigger pipe, fewer switches between threads
            fcntl.fcntl(self._write, fcntl.F_SETPIPE_SZ, _WRITE_BYTES)  # type: ignore[union-attr]
        self.path = f"/dev/fd/{self._read}"
        self.lines = 0
        self.done = False
        self._thread = threading.Thread(target=self._feed, name="jitrace-otlp-lines", daemon=True)

    def __enter__(self) -> _Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._read)  # a writer still blocked (DuckDB stopped reading) gets EPIPE and ends
        self._thread.join()

    def _feed(self) -> None:
        data = self._data
        view = memoryview(data)
        out = os.fdopen(self._write, "wb", buffering=_WRITE_BYTES)
        try:
            pos = len(_files.BOM) if data[:len(_files.BOM)] == _files.BOM else 0
            number = 0
            release = Release(data)
            while pos < len(data):
                if pos - release.done >= _RELEASE_BYTES:  # the pages written out
                    release.upto(pos)
                end = data.find(b"\n", pos)
                if end < 0:
                    end = len(data)
                number += 1
                if NOT_BLANK.search(data, pos, end):
                    if self._wrap:
                        out.write(b'{"l":%d,"r":' % number)
                        out.write(view[pos:end])
                        out.write(b"}\n")
                    else:
                        out.write(view[pos:end + 1] if end < len(data) else view[pos:end])
                        if end == len(data):
                            out.write(b"\n")
                    self.lines += 1
                pos = end + 1
            out.flush()
            self.done = True
        except BrokenPipeError:
            pass  # DuckDB stopped reading: its statement failed
        except Exception:  # e.g. the file shrank under the map: DuckDB must not take what it read for all
            with contextlib.suppress(OSError):
                out.write(b"\n}\n")
                out.flush()
        finally:
            view.release()
            with contextlib.suppress(OSError):
                out.close()
