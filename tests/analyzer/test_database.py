"""The run's database file (analyzer/steps/database.py): a table of a row group or more is written into the file as it
is stored, not logged to the WAL for the checkpoint to compress; cursors work on the file, not on DuckDB's default
in-memory database; and the file opens by itself, as the notebooks open it."""

from __future__ import annotations

import duckdb

from jitrace.analyzer.steps import database, session

ROWS = database.ROW_GROUP_SIZE * 2  # two row groups of evidence-like text


def test_a_stored_table_is_written_to_the_file_not_the_wal(tmp_path):
    con = session.connect(tmp_path / "jitrace.duckdb")
    con.execute(f"CREATE TABLE evidence AS SELECT i, repeat('{{\"ttl_s\": -0.25}}', 40) || i AS text "
                f"FROM range({ROWS}) AS r(i)")
    (used, wal), = con.execute("SELECT used_blocks, wal_size FROM pragma_database_size() "
                               "WHERE database_name = current_database()").fetchall()
    assert used > 0, "the table went to the WAL: the checkpoint would read it back and compress it"
    assert wal.endswith(("bytes", "KiB")), wal  # a few KB of catalog entries, not the table's megabytes
    con.close()


def test_cursors_and_readers_see_the_file(tmp_path):
    path = tmp_path / "jitrace.duckdb"
    con = session.connect(path)
    con.execute("CREATE TABLE attributions AS SELECT 42 AS answer")
    con.execute("CREATE TEMP TABLE pairs AS SELECT 1 AS only_here")
    assert session.on_cursor(con, lambda cur: cur.execute("SELECT answer FROM attributions").fetchall()) == [(42,)]
    assert con.execute("SELECT current_database()").fetchone() == (database.NAME,)
    con.close()
    with duckdb.connect(str(path), read_only=True) as reader:  # as a notebook opens it
        assert reader.execute("SELECT answer FROM attributions").fetchall() == [(42,)]
        assert reader.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'pairs'").fetchone() == (0,)


def test_an_in_memory_session_attaches_nothing():
    con = session.connect()
    assert con.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = ?",
                       [database.NAME]).fetchone() == (0,)
    assert session.on_cursor(con, lambda cur: cur.execute("SELECT current_database()").fetchone()) == ("memory",)
