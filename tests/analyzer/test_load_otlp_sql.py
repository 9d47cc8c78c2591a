"""The DuckDB path for OTLP JSON lines loads exactly what the Python reader loads, and hands it anything it cannot."""

from __future__ import annotations

import base64
import json

import duckdb
import pytest

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
