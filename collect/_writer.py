"""Durable Parquet writes with group commit: a batch is acknowledged only once it is on disk.

Every exporter call hands its rows to ``Writer.write``, which returns only after the rows are in a Parquet file
that was written under a temporary name, fsynced, renamed into place and its folder fsynced. Concurrent calls share
one commit: whoever finds the writer idle writes everything pending (one file per table), so many small
batches cost one fsync, not one each. A crash leaves at most ``*.parquet.tmp`` files, never acknowledged, which the
loader skips and the next receiver removes.

Files are filed under the hour of their arrival (the receiver's clock at the commit), not under the records' own
times: those are the sender's to choose, and one request with spans in a thousand hours would otherwise make a
thousand folders and fsync a thousand files. The analyzer reads times from the rows, never from the folder names.

These small files hold the normalized columns only (the cheapest write, on the acknowledgment path); ``_compact``
later merges each hour's files into one that also holds the typed span facts.

``on_commit`` (``jitrace collect --watch``) is told of each file once it is durable, just before its batches are
acknowledged: the watch reads the acknowledged files, in whichever receiver process wrote them. OTLP metrics are not
rows: ``write_file`` stores a request as it is, one durable file each (no group commit: they are few).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from jitrace.analyzer import redact, schema
from jitrace.analyzer.rows import table
from jitrace.collect import compact
from jitrace.collect._durable import TMP_SUFFIX, fsync_path

# These files are short-lived (compaction rewrites them with zstd): on the acknowledgment path the faster codec wins,
# for bigger files (BENCHMARKS.md, the receiver).
ACK_COMPRESSION = "lz4"
_SCHEMAS = {"spans": schema.SPANS, "logs": schema.LOGS}
_TEXT_COLUMNS = {"spans": schema.SPAN_TEXT_COLUMNS, "logs": ()}  # logs: redacted field by field when converted


class _Item:
    __slots__ = ("kind", "batch", "done", "error")

    def __init__(self, kind: str, batch: pa.Table) -> None:
        self.kind, self.batch, self.done, self.error = kind, batch, False, None


# (kind, file, rows in it, Unix time it became durable): called for every file of a commit before its batches are
# acknowledged
OnCommit = Callable[[str, Path, int, float], None]


class Writer:
    def __init__(self, out_dir: str | os.PathLike, on_commit: OnCommit | None = None) -> None:
        self.out = Path(out_dir)
        self.on_commit = on_commit
        self._cv = threading.Condition()
        self._pending: list[_Item] = []
        self._busy = False
        self.files = 0

    def remove_partial_files(self) -> int:
        """Delete ``*.tmp`` files a killed receiver left: their batches were never acknowledged. (A compaction's
        unfinished file is ``compact.finish``'s to remove: a compaction may be running in another process.)"""
        n = 0
        for kind in (*_SCHEMAS, "metrics"):
            for tmp in (self.out / kind).rglob(f"*{TMP_SUFFIX}") if (self.out / kind).is_dir() else ():
                if not tmp.name.startswith(compact.PREFIX):  # a compaction's: maybe another process's
                    tmp.unlink(missing_ok=True)
                    n += 1
        return n

    def write(self, kind: str, rows: list[tuple] | pa.Table, may_hold: tuple[str, ...] | None = None) -> None:
        """Return once ``rows`` (tuples in the ``kind`` table's column order, or a table of its schema) are durably on
        disk; ``may_hold``: a table's text columns that may hold a credential (the others are not redacted)."""
        if not len(rows):
            return
        if isinstance(rows, list):
            rows, may_hold = table(rows, _SCHEMAS[kind]), _TEXT_COLUMNS[kind]
        # a credential in an attribute, event or message is never stored (analyzer/redact.py)
        item = _Item(kind, redact.redact_arrow(rows, may_hold or ()))
        with self._cv:
            self._pending.append(item)
            while not item.done:
                if self._busy:
                    self._cv.wait()
                    continue
                self._busy, batch, self._pending = True, self._pending, []
                error = None
                self._cv.release()
                try:
                    self._commit(batch)
                except BaseException as exc:  # every waiter of this commit learns it failed: none is acknowledged
                    error = exc
                finally:
                    self._cv.acquire()
                for it in batch:
                    it.done, it.error = True, error
                self._busy = False
                self._cv.notify_all()
        if item.error is not None:
            raise item.error

    def _commit(self, batch: list[_Item]) -> None:
        groups: dict[str, list[pa.Table]] = defaultdict(list)
        for item in batch:
            groups[item.kind].append(item.batch)
        hour = f"hour={dt.datetime.now(dt.UTC):%Y-%m-%dT%H}"
        dirs = set()
        written = []
        for kind, tables in groups.items():  # one file per table: whatever times the records carry
            folder = self.out / kind / hour
            folder.mkdir(parents=True, exist_ok=True)
            final = folder / f"{uuid.uuid4().hex}.parquet"
            tmp = final.with_name(final.name + TMP_SUFFIX)
            batch_table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            with open(tmp, "wb") as f:
                pq.write_table(batch_table, f, compression=ACK_COMPRESSION)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, final)
            dirs.add(folder)
            written.append((kind, final, batch_table.num_rows))
            self.files += 1
        for folder in dirs:  # the rename itself must survive a crash
            fsync_path(folder)
        if self.on_commit is not None:
            now = time.time()
            for kind, final, n in written:
                self.on_commit(kind, final, n, now)

    def write_file(self, kind: str, data: bytes, suffix: str) -> Path:
        """Store ``data`` durably as a file of its own under ``kind``/hour=.../ (OTLP metrics requests)."""
        folder = self.out / kind / f"hour={dt.datetime.now(dt.UTC):%Y-%m-%dT%H}"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{uuid.uuid4().hex}{suffix}"
        tmp = final.with_name(final.name + TMP_SUFFIX)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)
        fsync_path(folder)
        return final
