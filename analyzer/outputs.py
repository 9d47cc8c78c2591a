"""Write an analyze output folder all at once: a reader (or a killed run) sees the previous output or the new one.

``jitrace analyze --out DIR`` builds everything in a sibling folder ``DIR.tmp-<pid>`` (same filesystem, so renames are
atomic) and swaps it into place at the end. The swap is one ``renameat2(RENAME_EXCHANGE)`` on Linux; where the kernel
or filesystem refuses that, DIR is renamed aside to ``DIR.old-<pid>``, the new folder renamed in and the old removed
(a kill between those two renames leaves no DIR for an instant; the next run puts ``DIR.old-*`` back first).

DIR may hold files that are not the analyzer's: ``jitrace demo`` keeps its lab inputs in ``DIR/lab``, and users drop
notes there. The analyzer's own files are listed in ``DIR/.jitrace-manifest.json``; every other entry of DIR is carried
into the new folder before the swap as hard links (a copy where linking fails), so it survives unchanged. Leftover
``DIR.tmp-*`` / ``DIR.old-*`` folders of runs that no longer exist are removed (or restored) by the next run.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb

from jitrace.analyzer import errors, session
from jitrace.analyzer.spans_view import exact, sql_string  # a quote in a folder name must not end the SQL string

MANIFEST = ".jitrace-manifest.json"
# What analyze writes; counted as the analyzer's own even in a folder written before manifests existed.
KNOWN_OUTPUTS = frozenset({
    "attributions.parquet", "attributions.csv", "clock_offsets.parquet", "summary.json", "report.html",
    "jitrace.duckdb", "jitrace.duckdb.wal", MANIFEST,
})
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# zstd, not DuckDB's default snappy: at 20k denials attributions.parquet is 1.0 MB instead of 3.0 MB (the evidence
# JSON compresses well). Level 1, not zstd's default 3: written in 0.047-0.049 s instead of 0.058-0.081 s, 5% bigger.
# Row groups of 4,096 rows: the writer holds one in memory (20k rows in one: +53 MB and 14k page faults; in groups of
# 4,096 on one thread, see one_thread_each: +23 MB, 0.065 s instead of 0.074 s, 4% bigger).
OUTPUT_PARQUET = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 4096"
# A run's folders beside DIR: DIR<STAGING>-<pid> while it builds, DIR<ASIDE>-<pid> for the old output while it swaps
STAGING, ASIDE = ".tmp", ".old"


def one_thread_each(con: duckdb.DuckDBPyConnection) -> None:
    """From here on, each statement runs on its caller's thread alone (``SET threads = 1``, for the rest of the run).

    What is left once the steps are done runs on three threads of the analyzer's own: the CSV, the Parquet files with
    the report, and the checkpoint. With threads of its own as well, DuckDB copies an ordered result to a file batch
    by batch, each batch a whole row group gathered in memory first: for a 21 MB attributions.csv that was +65 MB and
    17k page faults, 0.11-0.19 s; streamed on one thread it is +17 MB, 4.6k page faults, 0.07-0.095 s, the same
    bytes."""
    con.execute("SET threads = 1")


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cells(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...]) -> str:
    """The SELECT list of ``columns`` for a CSV: every text cell that a spreadsheet would run as a formula gets a
    leading single quote (strings from the wire, such as a service or principal name, must stay text)."""
    kinds = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
                             "AND database_name = current_database()", [table]).fetchall())
    starts = ", ".join(sql_string(c) for c in FORMULA_STARTS)
    quote = sql_string("'")
    return ", ".join(f"CASE WHEN left({c}, 1) IN ({starts}) THEN {quote} || {c} ELSE {c} END AS {c}"
                     if kinds.get(c) == "VARCHAR" else c for c in columns)


@contextmanager
def tables_written(con: duckdb.DuckDBPyConnection, out: Path, attribution_columns: tuple[str, ...]) -> Iterator[None]:
    """attributions.parquet / .csv (in the table's order: time, trace_id) and clock_offsets.parquet, from the
    session's tables.

    The attributions table is stored in order (queries/60_attributions.sql), so the files are written in the order
    they read it, without sorting (insertion order kept from here on). DuckDB writes such a CSV on one thread (a
    second at 200k denials), so the CSV is written on a cursor of its own while the Parquet files and whatever the
    body does (the report) take the other core; leaving the block waits for it. The tables read must not be TEMP
    ones: a cursor does not see its connection's TEMP tables."""
    con.execute("SET preserve_insertion_order = true")  # the analysis is done: what is left is written in order
    one_thread_each(con)  # as analyze has it already: on more threads, the CSV's computed cells lose that order
    cols = ", ".join(attribution_columns)
    with ThreadPoolExecutor(max_workers=1) as pool:  # DuckDB releases the GIL while it works
        csv_sql = (f"COPY (SELECT {csv_cells(con, 'attributions', attribution_columns)} FROM attributions) "
                   f"TO {sql_string(str(out / 'attributions.csv'))} (FORMAT csv, HEADER)")
        csv = pool.submit(session.on_cursor, con, lambda cursor: cursor.execute(csv_sql))
        try:
            con.execute(f"COPY (SELECT {cols} FROM attributions) "
                        f"TO {sql_string(str(out / 'attributions.parquet'))} ({OUTPUT_PARQUET})")
            con.execute(f"COPY (SELECT * FROM clock_offsets ORDER BY domain, window_start) "
                        f"TO {sql_string(str(out / 'clock_offsets.parquet'))} ({OUTPUT_PARQUET})")
            yield
        finally:
            csv.result()



@contextmanager
def staged(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; when the block ends without error, publish it as ``out_dir`` atomically.

    On an error the staging folder is removed and ``out_dir`` is left exactly as it was.
    """
    # a DIR that is a symlink: replace the folder it points to (swapping the link itself would strand the target)
    final = Path(out_dir).resolve()
    if final.exists() and not final.is_dir():
        raise errors.UserError(f"--out {out_dir}: exists and is not a folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    recover(final)
    tmp = final.with_name(f"{final.name}{STAGING}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover(final: Path) -> None:
    """Undo what killed runs left: restore an ``.old-*`` folder if DIR is missing, remove dead runs' leftovers."""
    for leftover in sorted(final.parent.glob(f"{exact(final.name)}{ASIDE}-*")):
        if _alive(leftover):
            continue
        if not final.exists():
            os.rename(leftover, final)  # killed between the two renames of the fallback swap: the old output is whole
        else:
            shutil.rmtree(leftover, ignore_errors=True)
    for leftover in final.parent.glob(f"{exact(final.name)}{STAGING}-*"):
        if not _alive(leftover):
            shutil.rmtree(leftover, ignore_errors=True)


def is_run_folder(name: str, out_name: str) -> bool:
    """Whether a folder beside the output ``out_name`` is a run's staging (``.tmp-<pid>``) or aside (``.old-<pid>``)
    copy of it."""
    return name.startswith((f"{out_name}{STAGING}-", f"{out_name}{ASIDE}-")) and name.rsplit("-", 1)[-1].isdigit()


def _alive(leftover: Path) -> bool:
    """Whether the run that made ``leftover`` (named ``...-<pid>``) still runs: a concurrent run keeps its folder."""
    pid_text = leftover.name.rsplit("-", 1)[-1]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def own_files(folder: Path) -> set[str]:
    """The entries of an output folder that the analyzer wrote (its manifest, plus the well-known output names)."""
    names = set(KNOWN_OUTPUTS)
    # no manifest (an older output, or a folder the user made): only the well-known names are ours
    with suppress(OSError, ValueError, KeyError, TypeError):
        names |= set(json.loads((folder / MANIFEST).read_text())["files"])
    return names


def publish(tmp: Path, final: Path) -> None:
    """Swap the finished ``tmp`` in as ``final``, keeping ``final``'s entries that are not the analyzer's."""
    written = sorted(p.name for p in tmp.iterdir())
    _write_durably(tmp / MANIFEST, json.dumps({"written_by": "jitrace analyze", "files": written}, indent=1) + "\n")
    for name in written:
        _fsync(tmp / name)
    if final.exists():
        os.chmod(tmp, stat.S_IMODE(final.stat().st_mode))  # a DIR the user made private stays private
        ours = own_files(final) | set(written)
        for entry in final.iterdir():
            if entry.name not in ours:
                _carry(entry, tmp / entry.name)
    _fsync(tmp)
    if not final.exists():
        os.rename(tmp, final)
    elif _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous output
    else:
        aside = final.with_name(f"{final.name}{ASIDE}-{os.getpid()}")
        os.rename(final, aside)
        os.rename(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    _fsync(final.parent)


def _carry(src: Path, dst: Path) -> None:
    """Bring a user's entry into the new folder unchanged: hard links cost no space and keep the very same files."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)  # a filesystem without hard links, or a file we may read but not link


_libc: ctypes.CDLL | None = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        fn = _libc.renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk, so a power loss after the swap cannot leave a renamed but empty file."""
    if path.is_symlink():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
