"""The pairs step is made by analyzer/steps/pairs.py for speed; queries/steps/pairs.sql stays its definition (the
view jitrace.duckdb keeps, the ClickHouse form). Both must hold the same rows, whatever the matches."""

from __future__ import annotations

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from jitrace.analyzer.steps import pairs, pipeline

# (trace, server, client, shared id): few ids, so that a server has parent and shared-id matches alike
MATCH = st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 5), st.booleans())


@settings(max_examples=100, deadline=None)
@given(st.lists(MATCH, max_size=30))  # none at all included
def test_the_builder_holds_the_rows_of_the_query(matches):
    step = next(s for s in pipeline.steps() if s.name == "pairs")
    con = duckdb.connect()
    con.execute("CREATE TABLE pairs_matched (trace_id VARCHAR, server_span_id VARCHAR, client_span_id VARCHAR, "
                "shared_id BOOLEAN, t1 BIGINT)")
    rows = [(f"t{t}", f"s{s}", f"c{c}", shared, i) for i, (t, s, c, shared) in enumerate(matches)]
    if rows:
        con.executemany("INSERT INTO pairs_matched VALUES (?, ?, ?, ?, ?)", rows)
    expected = sorted(con.execute(step.query()).fetchall())
    pairs.make(con, "TABLE")
    assert sorted(con.execute("FROM pairs").fetchall()) == expected
    # a server matched by its shared id keeps only that match
    kept = con.execute("SELECT count(*) FROM pairs AS m WHERE NOT m.shared_id AND EXISTS (SELECT 1 FROM pairs AS s "
                       "WHERE s.shared_id AND s.trace_id = m.trace_id AND s.server_span_id = m.server_span_id)")
    assert kept.fetchone()[0] == 0
