"""The ``pairs`` step made in two statements instead of queries/steps/pairs.sql's one, holding the same rows.

pairs.sql keeps every match of pairs_matched except a server's parent match when that server also has a match by
Zipkin's shared span id. As one query it reads the matches twice, so DuckDB materializes them (millions of rows)
before the table is written: a second copy. Here the matches are written once, and the losing parent matches are
deleted from the table only when a shared-id match is there at all (OpenTelemetry data has none: a scan of one
boolean column says so).
"""

from __future__ import annotations

import duckdb


def make(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    """(Re)create ``pairs`` as ``kind`` (TEMP TABLE or TABLE) from ``pairs_matched``."""
    con.execute(f"CREATE OR REPLACE {kind} pairs AS FROM pairs_matched")
    if con.execute("SELECT coalesce(bool_or(shared_id), false) FROM pairs").fetchone()[0]:
        con.execute("DELETE FROM pairs AS m WHERE NOT m.shared_id AND EXISTS (SELECT 1 FROM pairs AS s "
                    "WHERE s.shared_id AND s.trace_id = m.trace_id AND s.server_span_id = m.server_span_id)")
