"""The run's database file, and cursors on it.

A run attaches ``jitrace.duckdb`` (``connect``) instead of opening it as DuckDB's default database, for one setting only
ATTACH takes: the row-group size. DuckDB writes a table into the file as it is stored only once a row group fills
(122,880 rows by default); a smaller table goes to the write-ahead log, and the checkpoint then reads it back and
compresses it. At 1M spans that was the attributions (20k rows, 21 MB of WAL, 0.1 CPU-seconds of checkpoint). With
row groups of ``ROW_GROUP_SIZE`` rows, attributions writes them compressed into the file itself.

The file is attached as ``NAME`` and made the connection's current database (``USE``). A cursor, though, starts on
the instance's default (in-memory) database: ``cursor`` gives one on the file, for the loaders and the session's
work on other threads.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from jitrace.analyzer.steps.spans_view import sql_string  # a quote in a folder name must not end the SQL string

NAME = "jitrace"
ROW_GROUP_SIZE = 16_384  # a multiple of DuckDB's vector size (2,048)


def connect(path: str | Path) -> duckdb.DuckDBPyConnection:
    """A connection whose current database is the file at ``path`` (created if missing)."""
    con = duckdb.connect()
    con.execute(f"ATTACH {sql_string(str(path))} AS {NAME} (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
    con.execute(f"USE {NAME}")
    return con


def in_transaction(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the caller holds a transaction open: then two statements run in the same one. (Work done on a
    ``cursor`` commits on its own: the caller's open snapshot would not see its rows.)"""
    first, second = (con.execute("SELECT current_transaction_id()").fetchall()[0][0] for _ in range(2))
    return first == second


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of ``con`` (a connection of its own to the same instance) on the run's file when one is attached,
    else on the default database. Asks only the new cursor: ``con`` may be busy on another thread."""
    cur = con.cursor()
    # fetchall: the result read to its end, so the cursor has none unfinished (which register() refuses)
    (attached,), = cur.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = ?", [NAME]).fetchall()
    if attached:
        cur.execute(f"USE {NAME}")
    return cur
