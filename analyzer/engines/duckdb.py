"""The DuckDB engine: a connection of analyzer/session.py behind the engine interface (analyzer/engines)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from jitrace.analyzer.engines import DUCKDB

if TYPE_CHECKING:
    import pyarrow as pa


class DuckDBEngine:
    """``con`` (a session.connect connection, or any DuckDB connection) as an engine; it stays the caller's."""

    dialect = DUCKDB

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def run(self, sql: str) -> None:
        self.con.execute(sql)

    def arrow(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()

    def create_table(self, name: str, table: pa.Table, *, temporary: bool = False) -> None:
        self.con.register("jitrace_arrow_in", table)
        try:
            self.con.execute(f'CREATE OR REPLACE {"TEMP " if temporary else ""}TABLE "{name}" AS '
                             'SELECT * FROM jitrace_arrow_in')
        finally:
            self.con.unregister("jitrace_arrow_in")

    def close(self) -> None:
        """Nothing: the connection is the caller's to close."""
