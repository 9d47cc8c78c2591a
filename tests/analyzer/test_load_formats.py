"""Each supported format loads the same spans and logs: OTLP JSON in its producers' spellings (base64 or hex ids,
string or int enums, 64-bit ints as strings), compressed or not, OTLP protobuf files, logs of every kind."""

from __future__ import annotations

import gzip
import json
import struct

import duckdb
import jwt
import otlp_requests
import pytest
import zstandard
from google.protobuf.json_format import MessageToDict, MessageToJson

from jitrace.analyzer.load import load_into
from jitrace.instrumentation import contract

TOKEN = jwt.encode({"sub": "bob", "exp": 1}, "load-formats-test-key-32-bytes!!", algorithm="HS256")  # at run time
SPAN_COLS = "trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, service, attributes"


def _spans(paths) -> list[tuple]:
    con = duckdb.connect()
    report = load_into(con, [str(p) for p in paths])
    assert report.bad_records == 0, report.problems
    return con.execute(f"SELECT {SPAN_COLS} FROM spans ORDER BY span_id").fetchall()


@pytest.fixture(scope="module")
def requests_():
    return [otlp_requests.traces(30, service=f"s{i}", first=i * 30)[0] for i in range(3)]


def test_otlp_json_spellings_compressions_and_protobuf_load_the_same_spans(tmp_path, requests_):
    # MessageToJson is what protobuf's JSON mapping gives: base64 ids, string enums, 64-bit ints as strings
    lines = "\n".join(MessageToJson(r, indent=None) for r in requests_) + "\n"
    assert '"SPAN_KIND_SERVER"' in lines and '"startTimeUnixNano": "17' in lines
    (tmp_path / "base64.jsonl").write_text(lines)
    (tmp_path / "lines.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "lines.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    # the Collector's hex ids, int enums and int times, as one object
    doc = {"resourceSpans": [rs for r in requests_ for rs in _hex(MessageToDict(r))["resourceSpans"]]}
    (tmp_path / "one.json").write_text(json.dumps(doc, indent=2))
    # the file exporter's protobuf: each message after its 4-byte big-endian length
    (tmp_path / "traces.binpb").write_bytes(b"".join(struct.pack(">I", len(b)) + b
                                                      for b in (r.SerializeToString() for r in requests_)))
    results = {p.name: _spans([p]) for p in sorted(tmp_path.iterdir())}
    reference = results.pop("traces.binpb")
    assert len(reference) == 90 and {r[8] for r in reference} == {"s0", "s1", "s2"}
    assert json.loads(reference[0][9]) == {"rpc.system": "grpc", "rpc.grpc.status_code": 7,
                                           "jit.token.ttl_s": -1.5, "jit.token.verdict": "expired",
                                           "jit.token.present": True}
    for name, rows in results.items():
        assert rows == reference, name


def _hex(d: dict) -> dict:
    import base64

    for rs in d["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                s["traceId"] = base64.b64decode(s["traceId"]).hex()
                s["spanId"] = base64.b64decode(s["spanId"]).hex().upper()
                s["kind"] = 2
                s["startTimeUnixNano"] = int(s["startTimeUnixNano"])
    return d


def test_a_bare_protobuf_message_file(tmp_path, requests_):
    (tmp_path / "one.pb").write_bytes(requests_[0].SerializeToString())
    assert len(_spans([tmp_path / "one.pb"])) == 30


def test_otlp_logs_json_and_protobuf(tmp_path):
    req = otlp_requests.logs(6)
    req.resource_logs[0].scope_logs[0].log_records[0].body.string_value = f"authorization: Bearer {TOKEN}"
    (tmp_path / "logs.jsonl").write_text(MessageToJson(req, indent=None) + "\n")
    (tmp_path / "logs.binpb").write_bytes(struct.pack(">I", req.ByteSize()) + req.SerializeToString())
    for name in ("logs.jsonl", "logs.binpb"):
        con = duckdb.connect()
        report = load_into(con, [str(tmp_path / name)])
        assert (report.logs, report.spans, report.bad_records) == (6, 0, 0)
        rows = con.execute("SELECT time_ns, severity_number, severity_text, body, service, trace_id "
                           "FROM logs ORDER BY time_ns").fetchall()
        assert rows[0][:5] == (otlp_requests.T0, 13, "WARN", "authorization: Bearer [REDACTED]", "svc")
        assert rows[1][3] == "denied 1" and len(rows[1][5]) == 32


def test_application_json_logs_with_trace_context(tmp_path):
    lines = [
        # opentelemetry-instrumentation-logging's fields, through a JSON formatter
        {"asctime": "2024-05-01 12:00:00,250", "levelname": "WARNING", "name": "orders", "message":
         "token expired at 1714564800", "otelTraceID": "5b8efff798038103d269b633813fc60c",
         "otelSpanID": "eee19b7ec3c1b174", "otelServiceName": "orders", "otelTraceSampled": True, "user": "alice"},
        # outside a span the instrumentation writes "0"
        {"asctime": "2024-05-01 12:00:01,000", "levelname": "INFO", "message": "startup", "otelTraceID": "0",
         "otelSpanID": "0", "otelServiceName": "orders"},
        # trace_id/span_id fields, RFC 3339 with ns, a token in the message
        {"timestamp": "2024-05-01T12:00:02.123456789Z", "level": "error", "msg": f"rejected Bearer {TOKEN}",
         "trace_id": "5B8EFFF798038103D269B633813FC60C", "span_id": "EEE19B7EC3C1B174", "service": "gateway",
         "headers": {"authorization": f"Bearer {TOKEN}"}},
    ]
    path = tmp_path / "app.log.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    con = duckdb.connect()
    report = load_into(con, [str(path)])
    assert (report.logs, report.bad_records) == (3, 0)
    rows = con.execute("SELECT time_ns, trace_id, span_id, severity_number, severity_text, body, service, "
                       "attributes FROM logs ORDER BY time_ns").fetchall()
    assert rows[0][:7] == (1714564800250000000, "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", 13,
                           "WARNING", "token expired at 1714564800", "orders")
    assert json.loads(rows[0][7]) == {"name": "orders", "user": "alice"}
    assert rows[1][1:4] == (None, None, 9)
    assert rows[2][:7] == (1714564802123456789, "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", 17,
                           "error", "rejected Bearer [REDACTED]", "gateway")
    stored = str(con.execute("SELECT * FROM logs").fetchall())
    assert TOKEN not in stored and TOKEN.split(".")[1] not in stored


def test_opa_decision_logs_are_logs_with_the_bundle_revision_as_policy_version(tmp_path):
    decision = {  # the shape OPA's decision log plugin uploads
        "labels": {"id": "5ba0e1d0-0000-4000-8000-000000000000", "version": "0.63.0"},
        "decision_id": "4ca636c1-55e4-417a-b1d8-4aceb67960d1",
        "bundles": {"authz": {"revision": "rev-2024-05-01"}},
        "path": "jitlab/authz/allow",
        "input": {"method": "jitlab.Orders/Refund", "roles": ["support"],
                  "headers": {"authorization": f"Bearer {TOKEN}"}},
        "result": False,
        "requested_by": "127.0.0.1:51234",
        "timestamp": "2024-05-01T12:00:03.5+02:00",
        "trace_id": "5b8efff798038103d269b633813fc60c",
        "span_id": "eee19b7ec3c1b174",
        "metrics": {"timer_rego_query_eval_ns": 25000},
    }
    path = tmp_path / "decisions.jsonl"
    path.write_text(json.dumps(decision) + "\n" + json.dumps(decision | {"decision_id": "b", "result": True}) + "\n")
    con = duckdb.connect()
    report = load_into(con, [str(path)])
    assert (report.logs, report.bad_records) == (2, 0)
    rows = con.execute("SELECT time_ns, trace_id, span_id, service, body, attributes FROM logs "
                       "ORDER BY body").fetchall()
    assert rows[0][:5] == (1714557603500000000, "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "opa",
                           "OPA decision jitlab/authz/allow: allow")
    attrs = json.loads(rows[1][5])
    assert attrs[contract.POLICY_VERSION] == "rev-2024-05-01"
    assert attrs[contract.POLICY_DECISION] == contract.DECISION_DENY
    assert attrs[contract.POLICY_ENGINE] == "opa" and attrs["opa.decision_id"] == "4ca636c1-55e4-417a-b1d8-4aceb67960d1"
    assert attrs["opa.input"]["roles"] == ["support"]
    assert TOKEN not in str(rows)


def test_folders_globs_and_mixed_formats(tmp_path, requests_, real_data):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "t.jsonl").write_text(MessageToJson(requests_[0], indent=None) + "\n")
    (tmp_path / "a" / "deep").mkdir()
    (tmp_path / "a" / "deep" / "z.json").write_text((real_data / "skew.json").read_text())
    (tmp_path / "b.jsonl").write_text(json.dumps({"message": "hello", "trace_id": "0" * 31 + "1"}) + "\n")
    con = duckdb.connect()
    report = load_into(con, [str(tmp_path / "a"), str(tmp_path / "*.jsonl"), str(real_data / "yelp.json")])
    assert (report.spans, report.logs, report.files) == (30 + 4 + 16, 1, 4)
    # appending: a second load adds to the tables
    load_into(con, [str(tmp_path / "b.jsonl")])
    assert con.execute("SELECT count(*) FROM logs").fetchone() == (2,)


def test_jaeger_storage_model_json(tmp_path):
    # the storage model's JSON (Jaeger's v1 storage fixtures): base64 ids, RFC 3339 start, "...ns" duration,
    # typed tag fields (vStr, vInt64, ...) and the process inline
    doc = {"spans": [
        {"traceId": "AAAAAAAAAAAAAAAAAAAAEQ==", "spanId": "AAAAAAAAAAM=", "operationName": "example-operation-1",
         "references": [], "startTime": "2017-01-26T16:46:31.639875Z", "duration": "100000ns", "flags": 1,
         "tags": [{"key": "span.kind", "vType": "STRING", "vStr": "server"},
                  {"key": "retries", "vType": "INT64", "vInt64": "3"},
                  {"key": "ratio", "vType": "FLOAT64", "vFloat64": 0.5},
                  {"key": "error", "vType": "BOOL", "vBool": True}],
         "process": {"serviceName": "example-service-1", "tags": [{"key": "host.name", "vStr": "h1"}]},
         "logs": [{"timestamp": "2017-01-26T16:46:31.639875Z", "fields": [{"key": "event", "vStr": "retry"}]}]},
        {"traceId": "AAAAAAAAAAAAAAAAAAAAEQ==", "spanId": "AAAAAAAAAAQ=", "operationName": "child",
         "references": [{"refType": "CHILD_OF", "traceId": "AAAAAAAAAAAAAAAAAAAAEQ==", "spanId": "AAAAAAAAAAM="}],
         "startTime": "2017-01-26T16:46:31.639900Z", "duration": "20us",
         "process": {"serviceName": "example-service-2"}},
    ]}
    path = tmp_path / "fixture.json"
    path.write_text(json.dumps(doc))
    con = duckdb.connect()
    report = load_into(con, [str(path)])
    assert (report.spans, report.bad_records) == (2, 0)
    rows = con.execute(f"SELECT {SPAN_COLS}, status_code, events, resource FROM spans ORDER BY span_id").fetchall()
    assert rows[0][:9] == ("00000000000000000000000000000011", "0000000000000003", None, "example-operation-1",
                           "SERVER", 1485449191639875000, 1485449191639975000, "ERROR", "example-service-1")
    assert json.loads(rows[0][9]) == {"retries": 3, "ratio": 0.5, "error": True}
    assert json.loads(rows[0][11]) == [{"name": "retry", "time_ns": 1485449191639875000, "attributes": {}}]
    assert json.loads(rows[0][12]) == {"host.name": "h1", "service.name": "example-service-1"}
    assert rows[1][:7] == ("00000000000000000000000000000011", "0000000000000004", "0000000000000003", "child",
                           "INTERNAL", 1485449191639900000, 1485449191639920000)


@pytest.mark.parametrize(("text", "stored"), [
    ("no bearer token on the call", "no bearer token on the call"),  # words stay words
    ("Authorization: Bearer abc.def.ghi", "Authorization: Bearer [REDACTED]"),
    ("bearer 0123456789abcdef rest", "bearer [REDACTED] rest"),
    ("Bearer ABCDEFGHIJKLMNOPQRSTUV", "Bearer [REDACTED]"),  # an opaque token of letters only
    ("BeArEr abc.def.ghi", "BeArEr [REDACTED]"),  # any case, as HTTP's auth scheme is
    ("EYJhbGciOi.EYJzdWIiOi.sig", "[REDACTED]"),
])
def test_log_redaction_takes_tokens_not_words(text, stored):
    from jitrace.analyzer.redact import redact

    assert redact(text) == stored


@pytest.mark.parametrize("fmt", ["zipkin", "jaeger"])
def test_string_array_attributes_in_string_tags_are_arrays(tmp_path, fmt):
    # Zipkin and Jaeger tags are strings: exporters write an array attribute there as its JSON text
    tags = {contract.POLICY_GRANTED: '["editor","viewer"]', contract.POLICY_REQUEST: '["alice","orders","write"]',
            contract.POLICY_REQUIRED: "[not json", "other": '["stays", "text"]'}
    if fmt == "zipkin":
        doc = [{"traceId": "0" * 31 + "1", "id": "0" * 15 + "2", "kind": "SERVER", "name": "orders/Write",
                "timestamp": 1_700_000_000_000_000, "duration": 10, "localEndpoint": {"serviceName": "orders"},
                "tags": tags}]
    else:
        doc = {"data": [{"traceID": "0" * 31 + "1", "processes": {"p1": {"serviceName": "orders"}}, "spans": [
            {"traceID": "0" * 31 + "1", "spanID": "0" * 15 + "2", "operationName": "orders/Write", "processID": "p1",
             "startTime": 1_700_000_000_000_000, "duration": 10,
             "tags": [{"key": "span.kind", "type": "string", "value": "server"},
                      *({"key": k, "type": "string", "value": v} for k, v in tags.items())]}]}]}
    path = tmp_path / f"{fmt}.json"
    path.write_text(json.dumps(doc))
    con = duckdb.connect()
    assert load_into(con, [str(path)]).spans == 1
    row = con.execute("SELECT jit_policy_granted, jit_policy_request, jit_policy_required, attributes FROM spans"
                      ).fetchone()
    assert row[:3] == (["editor", "viewer"], ["alice", "orders", "write"], "[not json")
    assert json.loads(row[3])["other"] == '["stays", "text"]'  # only the contract's arrays are read as arrays


def test_a_protobuf_file_flushed_as_it_is_read_loads_every_span_once(tmp_path, requests_, monkeypatch):
    # a protobuf file's decoded requests go to DuckDB every FLUSH_SPANS spans (memory bounded): a request the C
    # decoder leaves to Python (a bad record) between them loses nothing and repeats nothing
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from jitrace.analyzer.load import _formats

    bad = ExportTraceServiceRequest()
    bad.CopyFrom(requests_[0])
    bad.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x01\x02"  # a bad record: Python's to read
    messages = [r.SerializeToString() for r in (requests_[0], bad, requests_[1], requests_[2])]
    path = tmp_path / "traces.binpb"
    path.write_bytes(b"".join(struct.pack(">I", len(m)) + m for m in messages))

    def loaded() -> tuple[list[tuple], int]:
        con = duckdb.connect()
        report = load_into(con, [str(path)])
        return con.execute(f"SELECT {SPAN_COLS} FROM spans ORDER BY span_id, name").fetchall(), report.bad_records

    whole = loaded()
    monkeypatch.setattr(_formats, "FLUSH_SPANS", 20)
    flushed: list[int] = []
    real = _formats._read_proto

    def counting(path, data, rows, flush=None):
        def counted(r):
            flushed.append(len(r.span_tables))
            flush(r)
        return real(path, data, rows, counted if flush else None)

    monkeypatch.setattr(_formats, "_read_proto", counting)
    # the bad request's other 29 spans are copies of the first request's: one row each
    assert loaded() == whole and whole[1] == 1 and len(whole[0]) == 90
    assert len(flushed) >= 3  # 30 spans a request, 20 a flush: after each request the C decoder read
