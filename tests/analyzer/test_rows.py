"""Row tuples to Arrow columns (analyzer/rows.py ``table``): the columns pa.array gives, built without it (it imports
pandas), and a value pa.array refuses refused alike."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from jitrace.analyzer import rows, schema

TEXT = st.one_of(st.none(), st.text(max_size=20))
INT64 = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))
INT32 = st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))
# what a reader might hand over by mistake: pa.array decides what becomes of it
ODD = st.one_of(st.floats(allow_nan=True), st.booleans(), st.binary(max_size=4), st.integers(2**63, 2**70))


def _by_pa_array(tuples: list[tuple], columns: schema.Columns) -> pa.Table:
    arrow = schema.arrow(columns)
    values = list(zip(*tuples, strict=True))
    return pa.Table.from_arrays([pa.array(list(col), type=f.type) for col, f in zip(values, arrow, strict=True)],
                                schema=arrow)


@st.composite
def log_rows(draw, odd_column: int | None = None) -> tuple:
    """A row of schema.LOGS; with ``odd_column``, that column's value of another type."""
    kinds = {"VARCHAR": TEXT, "BIGINT": INT64, "INTEGER": INT32}
    return tuple(draw(ODD if i == odd_column else kinds[kind]) for i, (_, kind) in enumerate(schema.LOGS))


@settings(max_examples=150, deadline=None)
@given(st.lists(log_rows(), min_size=1, max_size=6))
def test_log_rows_become_the_columns_pa_array_gives(tuples):
    got = rows.table(tuples, schema.LOGS)
    assert got.equals(_by_pa_array(tuples, schema.LOGS))
    assert got.schema == schema.arrow(schema.LOGS)


def _outcome(build) -> pa.Table | type:
    try:
        return build()
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        return type(exc)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_value_of_another_type_fares_as_with_pa_array(data):
    column = data.draw(st.integers(0, len(schema.LOGS.names) - 1))
    tuples = [data.draw(log_rows(column)), data.draw(log_rows())]
    expected = _outcome(lambda: _by_pa_array(tuples, schema.LOGS))
    got = _outcome(lambda: rows.table(tuples, schema.LOGS))
    if isinstance(expected, type):
        assert got is expected  # the same error
    else:
        assert isinstance(got, pa.Table) and got.equals(expected)


def test_span_rows_with_nulls_in_every_column_kind():
    row = ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", None, "x", "SERVER", 1, None, "UNSET", None,
           "svc", "{}", "{}", "[]", "[]", None, "f:1")
    tuples = [row, row[:5] + (None, 2**62) + row[7:]]
    got = rows.table(tuples, schema.SPANS)
    assert got.equals(_by_pa_array(tuples, schema.SPANS))
    assert got.column("start_ns").to_pylist() == [1, None] and got.column("end_ns").null_count == 1
