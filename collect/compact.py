"""Compaction: the receiver's many small Parquet files of an hour become one file, with the typed span facts.

The writer leaves one file per acknowledged commit (its cheapest durable write). Many small files are slow to read,
and they hold only the normalized columns. Once an hour's folder has been idle for a while (and for every folder
when the receiver stops), ``compact_folder`` rewrites its small files as one ``compacted-<uuid>.parquet``: span
files through queries/span_facts.sql, so the analyzer reads the jit facts as columns (analyzer/steps/spans_view.py).

Crash safety, without ever storing a span twice or losing one:
1. the new file is written as ``*.tmp`` (which loaders skip), fsynced, then renamed; its Parquet metadata names
   the files it replaces (``jitrace.replaces``);
2. only then are those files removed.
A crash between 1 and 2 leaves both; ``replaced_files`` tells loaders to skip the replaced ones, and the next
receiver removes them (``finish``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from jitrace.analyzer import schema
from jitrace.analyzer.steps import spans_view
from jitrace.collect._durable import TMP_SUFFIX, fsync_path

PREFIX = "compacted-"
LOCK_NAME = ".compact.lock"  # hidden names: loaders skip them
SPILL_DIR = ".compact.spill"
REPLACES_KEY = b"jitrace.replaces"
_SMALL_FILE = re.compile(r"[0-9a-f]{32}\.parquet")  # the writer's names (_writer.py): a uuid4's hex digits


@contextmanager
def _lock(out: Path, wait: bool) -> Iterator[bool]:
    """The folder's compaction lock: yields whether it was taken (with ``wait``, always, once the holder is done)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_NAME, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def small_files(folder: Path) -> list[Path]:
    """The receiver's own small files in ``folder``: compaction merges and removes these and no other file."""
    return sorted(p for p in folder.glob("*.parquet") if _SMALL_FILE.fullmatch(p.name))


def compact_folder(con: duckdb.DuckDBPyConnection, folder: Path, kind: str) -> tuple[int, int]:
    """Merge the folder's small files (``kind`` spans or logs) into one; returns (files replaced, records)."""
    sources = small_files(folder)
    if not sources:
        return 0, 0
    final = folder / f"{PREFIX}{uuid.uuid4().hex}.parquet"
    tmp = final.with_name(final.name + TMP_SUFFIX)
    names = schema.SPANS.names if kind == "spans" else schema.LOGS.names
    files = spans_view.sql_list(spans_view.exact_list([str(p) for p in sources]))
    read = f"(SELECT {', '.join(names)} FROM read_parquet({files}, union_by_name = true, hive_partitioning = false))"
    query = spans_view.facts_file_sql(read) if kind == "spans" else f"SELECT * FROM {read}"
    replaces = json.dumps([p.name for p in sources])
    con.execute(f"COPY ({query}) TO {spans_view.sql_string(str(tmp))} ({spans_view.FACTS_FILE_OPTIONS}, "
                f"KV_METADATA {{'{REPLACES_KEY.decode()}': {spans_view.sql_string(replaces)}}})")
    fsync_path(tmp)
    os.rename(tmp, final)
    fsync_path(folder)
    records = con.execute("SELECT num_rows FROM parquet_file_metadata(?)", [spans_view.exact(str(final))]).fetchone()[0]
    for p in sources:
        p.unlink(missing_ok=True)
    fsync_path(folder)
    return len(sources), records


def replaced_by(con: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    """The file names a compacted file replaced (empty for any other file). The metadata comes from a file anyone
    may have written: only names of the receiver's own small files (``<32 hex digits>.parquet``, in the same folder)
    count, never a path, so it can make jitrace skip or remove nothing else."""
    if not path.name.startswith(PREFIX):
        return []
    try:
        row = con.execute("SELECT value FROM parquet_kv_metadata(?) WHERE key = ?",
                          [spans_view.exact(str(path)), REPLACES_KEY]).fetchone()
        names = json.loads(row[0]) if row else []
    except (duckdb.Error, ValueError, TypeError):
        return []  # an unreadable file is reported by the loader that reads it
    if not isinstance(names, list):
        return []
    return [name for name in names if isinstance(name, str) and _SMALL_FILE.fullmatch(name)]


def replaced_files(con: duckdb.DuckDBPyConnection, files: list[Path]) -> set[Path]:
    """Among ``files``, those a compacted file in the same folder replaced (left by a crash before their removal)."""
    out: set[Path] = set()
    for path in files:
        out.update(path.parent / name for name in replaced_by(con, path))
    return out


def finish(out: Path) -> int:
    """Clean up after a compaction a crash interrupted: remove its unfinished ``*.tmp`` and the files it had already
    replaced. Skipped while another process compacts (it holds the lock). Returns how many files were removed."""
    n = 0
    with _lock(out, wait=False) as taken:
        if not taken:
            return 0
        for kind in ("spans", "logs"):
            base = out / kind
            if not base.is_dir():
                continue
            for tmp in base.rglob(f"{PREFIX}*{TMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)
                n += 1
            compacted = list(base.rglob(f"{PREFIX}*.parquet"))
            if not compacted:
                continue
            with duckdb.connect() as con:
                leftovers = replaced_files(con, compacted)
            for leftover in leftovers:
                if leftover.exists():
                    leftover.unlink(missing_ok=True)
                    n += 1
    return n


class Compactor:
    """Compacts every hour folder under ``out`` whose newest small file is older than ``idle_s`` (all of them on
    ``run(everything=True)``). With ``--workers`` the parent process runs it; ``jitrace collect --compact-only``
    runs one beside a live receiver safely (the lock)."""

    def __init__(self, out: Path, idle_s: float = 60.0) -> None:
        self.out, self.idle_s = Path(out), idle_s
        self.files = self.records = 0
        self.seconds = 0.0
        self._con: duckdb.DuckDBPyConnection | None = None

    def run(self, everything: bool = False, wait: bool = False) -> bool:
        """Compact the idle hour folders (every one with ``everything``). One compactor at a time per output folder
        (a lock file, ``.compact.lock``): when another holds it, return False at once, or wait for it with ``wait``."""
        with _lock(self.out, wait) as taken:
            if taken:
                self._run_locked(everything)
            return taken

    def _run_locked(self, everything: bool) -> None:
        now = time.time()
        for kind in ("spans", "logs"):
            base = self.out / kind
            for folder in sorted(base.glob("hour=*")) if base.is_dir() else ():
                sources = small_files(folder)
                if not sources:
                    continue
                try:
                    newest = max(p.stat().st_mtime for p in sources)
                except FileNotFoundError:
                    continue
                if everything or now - newest >= self.idle_s:
                    self._compact(folder, kind)

    def summary(self) -> str:
        return f"jitrace collect: compacted {self.files} files ({self.records} records) in {self.seconds:.1f} s"

    def _compact(self, folder: Path, kind: str) -> None:
        if self._con is None:  # one thread: compaction must not take the cores the receiver is using
            # Writing the denied spans first sorts the hour; past the memory limit the sort spills into the output
            # folder's SPILL_DIR (not the receiver's working directory), which DuckDB removes when done.
            self._con = duckdb.connect(config={"threads": 1, "memory_limit": "512MB",
                                               "temp_directory": str(self.out / SPILL_DIR)})
        started = time.perf_counter()
        files, records = compact_folder(self._con, folder, kind)
        self.seconds += time.perf_counter() - started
        self.files += files
        self.records += records
