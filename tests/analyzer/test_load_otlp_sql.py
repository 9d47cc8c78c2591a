"""The DuckDB path for OTLP JSON lines loads exactly what the Python reader loads, and hands it anything it cannot."""

from __future__ import annotations

import base64
import json

import duckdb
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jitrace.analyzer.load import _otlp_sql, load_into

COLUMNS = ("trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, status_message, service, "
           "resource::VARCHAR, attributes::VARCHAR, events::VARCHAR, links::VARCHAR, scope, source")


def _value(v):
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": v}


def _attrs(d):
    return [{"key": k, "value": _value(v)} for k, v in d.items()]


def _span(i, **extra):
    return {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": f"s{i}", "kind": 2,
            "startTimeUnixNano": str(10 + i), "endTimeUnixNano": 20 + i, **extra}


def _lines(*spans_per_line):
    return "\n".join(json.dumps({"resourceSpans": [{
        "resource": {"attributes": _attrs({"service.name": "orders", "host.name": "h\u00e9\"1"})},
        "scopeSpans": [{"scope": {"name": "grpc"}, "spans": list(spans)}]}]}) for spans in spans_per_line) + "\n"


def _load(path, monkeypatch, sql: bool):
    taken = []
    real = _otlp_sql.insert

    def spy(*args):
        taken.append(out := real(*args))
        return out

    monkeypatch.setattr(_otlp_sql, "insert", spy)
    if not sql:
        monkeypatch.setattr(_otlp_sql, "applies", lambda data: False)
    con = duckdb.connect()
    report = load_into(con, [str(path)])
    monkeypatch.undo()
    return con.execute(f"SELECT {COLUMNS} FROM spans").fetchall(), report, taken


VARIED = [
    _span(0, attributes=_attrs({"s": "x\n\"y\u2603", "i": -7, "big": 2**62, "d": 1.0, "d2": -1.5e-7, "t": True,
                                "f": False, "arr": ["a", "b"], "ints": [1, 2], "e": []})),
    _span(1, traceId=base64.b64encode(bytes.fromhex("5b8efff798038103d269b633813fc60c")).decode(),
          spanId="EEE19B7EC3C1B174", parentSpanId="0000000000000000", kind="SPAN_KIND_CLIENT",
          status={"code": "STATUS_CODE_ERROR", "message": "denied"},
          attributes=[{"key": "bytes", "value": {"bytesValue": "AAEC"}}, {"key": "empty", "value": {}},
                      {"key": "nan", "value": {"doubleValue": "NaN"}}, {"key": "n", "value": {"intValue": 5}}]),
    _span(2, parentSpanId="00000000000000aa", status={"code": 1},
          events=[{"name": "ev", "timeUnixNano": "15", "attributes": _attrs({"k": 1})}, {"timeUnixNano": 16}],
          links=[{"traceId": "ab" * 16, "spanId": "cd" * 8, "attributes": _attrs({"l": "v"})}]),
]


def test_sql_path_loads_what_the_python_reader_loads(tmp_path, monkeypatch):
    path = tmp_path / "export.jsonl"
    path.write_text(_lines(VARIED[:2], VARIED[2:], [_span(3)]))
    sql_rows, sql_report, taken = _load(path, monkeypatch, sql=True)
    py_rows, py_report, _ = _load(path, monkeypatch, sql=False)
    assert taken == [4]  # the DuckDB path loaded the file itself
    assert sql_rows == py_rows
    assert (sql_report.spans, sql_report.bad_records) == (py_report.spans, py_report.bad_records) == (4, 0)
    assert [r[-1] for r in sql_rows] == [f"{path}:1", f"{path}:1", f"{path}:2", f"{path}:3"]


@pytest.mark.parametrize("odd", [
    {"spanId": "xyz"},  # a bad record: reported by the Python reader
    {"startTimeUnixNano": "12.5"},  # DuckDB would round it; Python says it is not an integer
    {"spanId": "1"},  # short hex (Python pads it)
    {"attributes": [{"key": "kv", "value": {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "1"}}]}}}]},
    {"attributes": [{"key": "nested", "value": {"arrayValue": {"values": [{"arrayValue": {"values": []}}]}}}]},
    {"attributes": [{"key": "s", "value": {"stringValue": 5}}]},
    {"attributes": [{"value": {"stringValue": "no key"}}]},
    {"kind": "SPAN_KIND_SIDEWAYS"},
])
def test_what_the_sql_path_cannot_convert_goes_to_the_python_reader(tmp_path, monkeypatch, odd):
    path = tmp_path / "export.jsonl"
    path.write_text(_lines([_span(0)], [_span(1, **odd)]))
    sql_rows, sql_report, taken = _load(path, monkeypatch, sql=True)
    py_rows, py_report, _ = _load(path, monkeypatch, sql=False)
    assert taken == [None]  # fell back, nothing inserted twice
    assert sql_rows == py_rows
    assert (sql_report.spans, sql_report.bad_records, sql_report.problems) == \
        (py_report.spans, py_report.bad_records, py_report.problems)


_text = st.one_of(st.text(max_size=12), st.sampled_from(["", "0", "-1", "12.5", " 7", "+5", "1e3", "NaN", "-Infinity",
                                                         "9223372036854775808", "SPAN_KIND_SERVER", "2", "AAEC"]))


def _mostly(good, hostile):
    """Mostly well-formed (so that whole files reach the SQL path), sometimes anything."""
    return st.one_of(*[good] * 8, hostile)


_odd_id = st.one_of(_text, st.sampled_from(["00" * 16, "0" * 16, "abc", "cd" * 8, "ab" * 16]))
_trace_id = _mostly(st.sampled_from(["ab" * 16, "AB" * 16, base64.b64encode(b"\x01" * 16).decode()]), _odd_id)
_span_id = _mostly(st.sampled_from(["cd" * 8, "CD" * 8, "q83vEjRWeJA="]), _odd_id)
_time = _mostly(st.integers(0, 2**62).map(str), st.one_of(_text, st.integers(0, 2**62)))
_any = st.one_of(
    st.builds(lambda s: {"stringValue": s}, st.text(max_size=8)),
    st.builds(lambda s: {"intValue": s}, _mostly(st.integers(-(2**63), 2**63 - 1).map(str),
                                                 st.one_of(_text, st.integers(-(2**63), 2**63 - 1)))),
    st.builds(lambda s: {"doubleValue": s}, _mostly(st.floats(), _text)),
    st.builds(lambda b: {"boolValue": b}, st.booleans()),
    st.builds(lambda s: {"bytesValue": s}, st.text(max_size=8)),
    st.just({}),
)
_any_or_array = st.one_of(_any, st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(_any, max_size=3)))
_attrs_st = st.lists(st.fixed_dictionaries({"key": st.sampled_from(["a", "b", "é"]), "value": _any_or_array}),
                     max_size=4, unique_by=lambda kv: kv["key"])
_hostile_span = st.fixed_dictionaries(
    {"traceId": _trace_id, "spanId": _span_id},
    optional={"parentSpanId": _span_id, "name": st.text(max_size=6),
              "kind": _mostly(st.integers(0, 5), st.one_of(_text, st.integers(-1, 7))),
              "startTimeUnixNano": _time, "endTimeUnixNano": _time,
              "status": st.fixed_dictionaries({}, optional={
                  "code": _mostly(st.integers(0, 2), st.one_of(_text, st.integers(-1, 3))),
                  "message": st.text(max_size=6)}),
              "attributes": _attrs_st,
              "events": st.lists(st.fixed_dictionaries({"timeUnixNano": _time, "attributes": _attrs_st},
                                                       optional={"name": st.text(max_size=5)}), max_size=2),
              "links": st.lists(st.fixed_dictionaries({"traceId": _trace_id, "spanId": _span_id,
                                                       "attributes": _attrs_st}), max_size=2)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.lists(_hostile_span, min_size=1, max_size=3), min_size=2, max_size=3))
def test_hostile_but_well_typed_spans_load_as_the_python_reader_loads_them(tmp_path, monkeypatch, lines):
    """Values of the right JSON types but any content: the SQL path loads the same rows, or hands the file over."""
    path = tmp_path / "export.jsonl"
    path.write_text(_lines(*lines))
    sql_rows, sql_report, taken = _load(path, monkeypatch, sql=True)
    py_rows, py_report, _ = _load(path, monkeypatch, sql=False)
    assert sql_rows == py_rows
    assert (sql_report.bad_records, sql_report.problems) == (py_report.bad_records, py_report.problems)
    event("loaded by the SQL path" if taken[0] is not None else "handed to the Python reader")  # ~1 in 15
