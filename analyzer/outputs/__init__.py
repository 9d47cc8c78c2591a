"""Write an analyze output folder file by file, touching nothing in it that jitrace did not write.

``jitrace analyze --out DIR`` builds every file in ``DIR/.jitrace-staging-<pid>`` (inside DIR: the same filesystem
even when DIR is a mount point, and hidden, so no folder walk reads it) and then moves them into DIR one by one, each
an atomic rename, the manifest ``DIR/.jitrace-manifest.json`` last. A reader sees each file whole, old or new; a run
killed while it moves them leaves its staging folder marked complete, and the next run finishes the move first.

DIR may hold entries that are not the analyzer's: ``jitrace demo`` keeps its lab inputs in ``DIR/lab``, users drop
notes, a filesystem may be mounted there. None of them is moved, copied or removed. An output name in DIR that the
manifest does not list (a user's own ``report.html``) makes the run refuse DIR before it starts.

``jitrace replay --out DIR`` publishes its own files the same way (``staged(..., command="replay",
known=REPLAY_OUTPUTS)``). A folder holds one command's output: a manifest written by another command makes a run
refuse DIR (replay's report.html must not replace analyze's).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb

from jitrace.analyzer import errors
from jitrace.analyzer.steps import session
from jitrace.analyzer.steps.spans_view import exact, sql_string  # a quote in a folder name must not end the SQL string

MANIFEST = ".jitrace-manifest.json"
# Every name analyze writes into DIR: the only names a manifest can claim (outputs.own_files).
KNOWN_OUTPUTS = frozenset({
    "attributions.parquet", "attributions.csv", "clock_offsets.parquet", "summary.json", "report.html",
    "jitrace.duckdb", "jitrace.duckdb.wal", MANIFEST,
})
# Every name replay writes into DIR (analyzer/replay.py).
REPLAY_OUTPUTS = frozenset({"flips.parquet", "flips.csv", "replay.json", "report.html", MANIFEST})
# zstd, not DuckDB's default snappy: the evidence JSON compresses well. Level 1, not zstd's default 3: faster to
# write, hardly bigger. Row groups of 4,096 rows: the writer holds one in memory (one_thread_each).
OUTPUT_PARQUET = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 4096"
STAGING = ".jitrace-staging-"  # + the run's pid: a run's folder inside DIR while it builds
COMPLETE = ".complete"  # in a staging folder: every file is written and synced; what is left is moving them


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
def tables_written(con: duckdb.DuckDBPyConnection, out: Path, attribution_columns: tuple[str, ...],
                   csv_extra: dict[str, str] | None = None) -> Iterator[None]:
    """attributions.parquet / .csv (in the table's order: time, trace_id) and clock_offsets.parquet, from the
    session's tables. ``csv_extra``: columns the CSV adds after ``attribution_columns`` (name -> SQL expression
    over the attributions table; jitrace's own text, such as a trace link, so not formula-quoted).

    The attributions table is stored in order (queries/steps/attributions.sql), so the files are written in the order
    they read it, without sorting (insertion order kept from here on). DuckDB writes such a CSV on one thread (a
    second at 200k denials), so the CSV is written on a cursor of its own while the Parquet files and whatever the
    body does (the report) take the other core; leaving the block waits for it. The tables read must not be TEMP
    ones: a cursor does not see its connection's TEMP tables."""
    con.execute("SET preserve_insertion_order = true")  # the analysis is done: what is left is written in order
    one_thread_each(con)  # as analyze has it already: on more threads, the CSV's computed cells lose that order
    cols = ", ".join(attribution_columns)
    with ThreadPoolExecutor(max_workers=1) as pool:  # DuckDB releases the GIL while it works
        extra = "".join(f", {expr} AS {name}" for name, expr in (csv_extra or {}).items())
        csv_sql = (f"COPY (SELECT {csv_cells(con, 'attributions', attribution_columns)}{extra} FROM attributions) "
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
def staged(out_dir: str | Path, *, command: str = "analyze", known: frozenset[str] = KNOWN_OUTPUTS) -> Iterator[Path]:
    """Yield an empty staging folder; when the block ends without error, publish its files into ``out_dir``.
    ``command`` is the ``jitrace`` command writing (the manifest says so), ``known`` every name it may write.

    On an error the staging folder is removed and ``out_dir`` is left exactly as it was (not there, if it was not).
    """
    final = Path(out_dir).resolve()  # a DIR that is a symlink: the folder it points to
    if final.exists() and not final.is_dir():
        raise errors.UserError(f"--out {out_dir}: exists and is not a folder")
    writer = _writer(final)
    if writer is not None and writer != f"jitrace {command}":
        raise errors.UserError(f"--out {out_dir}: holds the output of {writer}; choose another folder")
    created = not final.exists()
    final.mkdir(parents=True, exist_ok=True)
    recover(final)
    foreign = sorted(name for name in known - {MANIFEST} if (final / name).exists()
                     and name not in own_files(final, known))
    if foreign:
        raise errors.UserError(f"--out {out_dir}: holds {foreign[0]}, which jitrace did not write (not in "
                               f"{MANIFEST}); move it or choose another folder")
    tmp = final / f"{STAGING}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        publish(tmp, final, command=command, known=known)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:  # a failed first run leaves no empty folder behind
            with suppress(OSError):
                final.rmdir()
        raise


def recover(final: Path) -> None:
    """Finish what killed runs left in ``final``: a complete staging folder is published, an incomplete one removed
    (only folders named as a run's staging folder, of a run that no longer exists)."""
    for leftover in sorted(final.glob(f"{exact(STAGING)}*")):
        if not leftover.is_dir() or leftover.is_symlink() or not leftover.name[len(STAGING):].isdigit():
            continue
        if _alive(leftover):
            continue
        if (leftover / COMPLETE).is_file():
            _move_files(leftover, final)
        shutil.rmtree(leftover, ignore_errors=True)


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


def own_files(folder: Path, known: frozenset[str] = KNOWN_OUTPUTS) -> set[str]:
    """The output names in ``folder`` that jitrace wrote: those its manifest lists (only names in ``known``, what the
    command writes: a manifest is a file anyone may write, and must not make jitrace skip or replace any other)."""
    with suppress(OSError, ValueError, KeyError, TypeError):
        listed = json.loads((folder / MANIFEST).read_text())["files"]
        return {name for name in listed if isinstance(name, str)} & known | {MANIFEST}
    return set()


def _writer(folder: Path) -> str | None:
    """The ``jitrace`` command that wrote ``folder``'s manifest, if it names one."""
    with suppress(OSError, ValueError, AttributeError):
        writer = json.loads((folder / MANIFEST).read_text()).get("written_by")
        return writer if isinstance(writer, str) and writer.startswith("jitrace ") else None
    return None


def publish(tmp: Path, final: Path, *, command: str = "analyze", known: frozenset[str] = KNOWN_OUTPUTS) -> None:
    """Move the finished files of ``tmp`` into ``final`` one by one, the manifest last; remove the previous run's
    files that this run did not write again (only output names the old manifest lists)."""
    written = sorted(p.name for p in tmp.iterdir())
    _write_durably(tmp / MANIFEST, json.dumps({"written_by": f"jitrace {command}", "files": written}, indent=1)
                   + "\n")
    for name in written:
        _fsync(tmp / name)
    _write_durably(tmp / COMPLETE, "")
    _fsync(tmp)
    stale = own_files(final, known) - set(written) - {MANIFEST}
    _move_files(tmp, final)
    for name in stale:
        with suppress(FileNotFoundError):
            (final / name).unlink()
    shutil.rmtree(tmp, ignore_errors=True)


def _move_files(tmp: Path, final: Path) -> None:
    """Each file of a complete staging folder renamed into ``final`` (atomic each), the manifest last."""
    names = sorted(p.name for p in tmp.iterdir() if p.name not in (MANIFEST, COMPLETE))
    for name in [*names, MANIFEST]:
        if (tmp / name).exists():
            os.replace(tmp / name, final / name)
    _fsync(final)


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
