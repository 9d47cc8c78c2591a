"""Text inputs parsed on every core: JSON is Python work under one GIL, so big inputs are split over processes.

The unit of work is a whole file, or, for a big uncompressed JSON-lines file (the Collector's file exporter), a
range of its lines cut at line ends. Each worker parses its unit with the same readers as the sequential path
(``_formats``) and returns Arrow tables, so records, positions (``path:LINE``) and bad-record reports are the same
whichever path ran. Results are taken in input order: a load is repeatable. Small inputs stay in one process:
starting workers costs more than it saves.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

from jitrace.analyzer import schema
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import _files

if TYPE_CHECKING:
    import pyarrow as pa

MIN_BYTES = 32 * 1024 * 1024  # total text input below which one process parses everything
CHUNK_BYTES = 16 * 1024 * 1024  # a JSON-lines file is cut into ranges of about this size
MAX_PROCESSES = 4


@dataclass(frozen=True)
class Unit:
    path: Path
    start: int = 0  # byte range of a JSON-lines file; end < 0: the whole file
    end: int = -1
    first_line: int = 1
    kind: str | None = None  # "otlp" or "logs": decided once for the whole file, from its first record


@dataclass
class Parsed:
    spans: pa.Table
    logs: pa.Table
    bad: int
    problems: list[str]
    skipped: int = 0  # requests of other OTLP signals (_formats.OTHER_SIGNALS)
    unknown: UserError | None = None  # the file is in no known format (_formats.UnknownFormat): nothing was read


def processes() -> int:
    return max(1, min(MAX_PROCESSES, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def plan(files: list[Path]) -> list[Unit] | None:
    """Units for ``files`` (text inputs), or None when one process should parse them."""
    if processes() < 2:
        return None
    sizes = {}
    for path in files:
        try:
            sizes[path] = path.stat().st_size
        except OSError:
            return None  # the sequential path reports the unreadable file
    if sum(sizes.values()) < MIN_BYTES:
        return None
    units: list[Unit] = []
    for path in files:
        units += _split(path) if sizes[path] > CHUNK_BYTES else [Unit(path)]
    return units if len(units) > 1 else None  # one unit (a big JSON document): a worker would only add cost


def _split(path: Path) -> list[Unit]:
    """A big JSON-lines file as ranges of lines; any other file as one unit. The file is mapped, not read: the
    workers read their ranges, and the parent holds at most one range at a time (to count its lines)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _ranges(path, data)


def _ranges(path: Path, data: mmap.mmap) -> list[Unit]:
    if _files.is_compressed(data[:4]):
        return [Unit(path)]
    first_end = data.find(b"\n")
    if first_end < 0 or first_end > CHUNK_BYTES:  # one line: a single JSON document (not parsed twice here)
        return [Unit(path)]
    kind = _lines_kind(data[:first_end])
    if kind is None:
        return [Unit(path)]  # a pretty-printed document, or a first line the sequential reader must judge
    units, start, line = [], 0, 1
    while start < len(data):
        end = data.find(b"\n", min(start + CHUNK_BYTES, len(data) - 1))
        end = len(data) if end < 0 else end + 1
        units.append(Unit(path, start, end, line, kind))
        line += data[start:end].count(b"\n")
        start = end
    return units


def _lines_kind(first: bytes) -> str | None:
    from jitrace.analyzer.load import _applogs, _formats

    first = first.removeprefix(_files.BOM)
    try:
        obj = json.loads(first)
    except ValueError:
        return None
    if (isinstance(obj, dict) and any(k in obj for k in _formats.OTLP_KEYS)) or _formats.other_signal(obj):
        return "otlp"
    if _applogs.is_opa(obj) or _applogs.is_app_log(obj):
        return "logs"
    return None


def parse(unit: Unit) -> Parsed:
    """In a worker: one unit's rows as Arrow tables (a UserError, e.g. an unknown format, reaches the caller)."""
    from jitrace.analyzer.load import _formats
    from jitrace.analyzer.rows import Rows, spans_table, table

    gc.disable()  # as load_into: millions of short-lived dicts, no cycles
    rows = Rows()
    if unit.end < 0:
        try:
            _formats.read_path(unit.path, rows)
        except _formats.UnknownFormat as err:
            return Parsed(table([], schema.SPANS), table([], schema.LOGS), 0, [], 0, err)
    else:
        with open(unit.path, "rb") as f:
            f.seek(unit.start)
            text = f.read(unit.end - unit.start).decode("utf-8", errors="replace")
        if unit.start == 0:
            text = text.removeprefix("\ufeff")
        _formats.read_lines(unit.path, text, rows, first_line=unit.first_line, kind=unit.kind)
    return Parsed(spans_table(rows), table(rows.logs, schema.LOGS), rows.bad, rows.problems[:1000],
                  rows.skipped)


def run(units: list[Unit]) -> Iterator[Parsed]:
    """Parse ``units`` on worker processes; yields results in the units' order. Where workers cannot run (a main
    module spawn cannot import, such as a script read from stdin) or die, the rest is parsed here."""
    # spawn, not fork: the parent holds DuckDB's threads and locks, which a forked child must not inherit
    pool = ProcessPoolExecutor(min(processes(), len(units)), mp_context=get_context("spawn"))
    done = 0
    try:
        for parsed in pool.map(parse, units):
            yield parsed
            done += 1
    except BrokenProcessPool:
        for unit in units[done:]:
            yield parse(unit)
    finally:  # an error (a file in no known format, --strict) stops the work not started yet
        pool.shutdown(wait=True, cancel_futures=True)
