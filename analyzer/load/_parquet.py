"""jitrace Parquet (``jitrace collect``'s files, or any file in the SPANS/LOGS schema) -> straight into DuckDB.

Span files go to analyzer/steps/spans_view.py: those holding the typed facts (``jitrace collect``'s compacted files) are
read in place, the others copied. Log files are inserted with DuckDB's ``read_parquet``: every file in one
statement, in parallel, with no Python per row. A record's ``source`` is its file unless the file already says
where the record came from.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from jitrace.analyzer import schema
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.steps import spans_view

MAGIC = b"PAR1"


def table_of(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[str, bool]:
    """``spans`` or ``logs`` from the file's columns, and whether it has ``source``; else a UserError."""
    names = set(spans_view.parquet_columns(con, [str(path)])[str(path)])
    for table, columns in (("spans", schema.SPANS), ("logs", schema.LOGS)):
        if {"source"} | names >= set(columns.names):
            return table, "source" in names
    missing = sorted(set(schema.SPANS.names) - names - {"source"})
    raise UserError(f"{path}: Parquet without jitrace's span or log columns (missing {', '.join(missing[:5])})")


def insert(con: duckdb.DuckDBPyConnection, table: str, files: list[Path], has_source: bool) -> int:
    """Add every file's rows to ``table``; returns how many. Span files are read in place (steps/spans_view.py)."""
    if not files:
        return 0
    try:  # a file whose footer reads may still hold damaged pages: DuckDB meets them here
        if table == "spans":
            return spans_view.add_files(con, files, has_source)
        cols = schema.columns_with_source(schema.LOGS, has_source)
        (count,) = con.execute(
            f"INSERT INTO {table} BY NAME SELECT {cols} FROM read_parquet(?, filename = true, union_by_name = true)",
            [spans_view.exact_list([str(f) for f in files])],
        ).fetchone()
    except duckdb.Error as exc:
        raise UserError(f"{', '.join(map(str, files[:3]))}: cannot load Parquet: {str(exc).splitlines()[0]}") from None
    return int(count)
