"""The receiver's protocol behaviour: errors (bad, oversize), content types, gzip, durability, not tracing itself."""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import json

import duckdb
import grpc
import otlp_requests
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from jitrace.analyzer.load import load_into
from jitrace.collect import Receiver

EXPORT_TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
EXPORT_LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(tmp_path / "out", "127.0.0.1:0", "127.0.0.1:0", max_bytes=200_000)
    grpc_port, http_port = r.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("grpc.max_send_message_length", 10**8)])
    yield r, channel, http_port
    channel.close()
    r.stop()


def _stored(r: Receiver) -> tuple[int, int]:
    con = duckdb.connect()
    rep = load_into(con, [str(r.out)])
    return rep.spans, rep.logs


def _post(port: int, path: str, body: bytes, headers: dict) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Content-Type")
    finally:
        conn.close()


def test_grpc_bad_payload_is_invalid_argument_and_the_receiver_keeps_serving(receiver):
    r, channel, _ = receiver
    export = channel.unary_unary(EXPORT_TRACES)  # raw bytes
    with pytest.raises(grpc.RpcError) as err:
        export(b"\xff\xff\xff garbage", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    req, ids = otlp_requests.traces(50)
    assert ExportTraceServiceResponse.FromString(export(req.SerializeToString(), timeout=10)) == \
        ExportTraceServiceResponse()
    assert _stored(r) == (50, 0)


def test_grpc_oversize_is_resource_exhausted_and_the_receiver_keeps_serving(receiver):
    r, channel, _ = receiver
    export = channel.unary_unary(EXPORT_TRACES)
    big, _ = otlp_requests.traces(3000)  # well over max_bytes=200_000
    with pytest.raises(grpc.RpcError) as err:
        export(big.SerializeToString(), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    small, _ = otlp_requests.traces(10)
    export(small.SerializeToString(), timeout=10)
    assert _stored(r) == (10, 0)


def test_grpc_every_acknowledged_batch_is_already_on_disk(receiver):
    r, channel, _ = receiver
    export = channel.unary_unary(EXPORT_TRACES)
    logs = channel.unary_unary(EXPORT_LOGS)
    total = 0
    arrived = dt.datetime.now(dt.UTC)
    for n in (1, 7, 100):
        req, _ = otlp_requests.traces(n)
        export(req.SerializeToString(), timeout=10)
        total += n
        assert _stored(r)[0] == total  # readable the moment the call returns: no buffering after the ack
    logs(otlp_requests.logs(5).SerializeToString(), timeout=10)
    assert _stored(r) == (total, 5)
    assert not list(r.out.rglob("*.tmp"))
    # filed by the hour they arrived in (the spans are from 2023): the sender does not choose the folders
    now = {f"hour={t:%Y-%m-%dT%H}" for t in (arrived, dt.datetime.now(dt.UTC))}
    assert {p.parent.name for p in r.out.rglob("*.parquet")} <= now


def test_grpc_partial_success_counts_spans_with_bad_ids(receiver):
    r, channel, _ = receiver
    req, _ = otlp_requests.traces(5)
    req.resource_spans[0].scope_spans[0].spans[2].span_id = b"\x01\x02"  # 2 bytes: not a span id
    resp = ExportTraceServiceResponse.FromString(channel.unary_unary(EXPORT_TRACES)(req.SerializeToString(),
                                                                                    timeout=10))
    assert resp.partial_success.rejected_spans == 1 and "span_id" in resp.partial_success.error_message
    assert _stored(r) == (4, 0)


def test_http_protobuf_gzip_and_json_bodies_are_accepted(receiver):
    r, _, port = receiver
    req, _ = otlp_requests.traces(20)
    status, body, ctype = _post(port, "/v1/traces", gzip.compress(req.SerializeToString()),
                                {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert (status, ctype) == (200, "application/x-protobuf")
    doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "j"}}]},
                              "scopeSpans": [{"spans": [
                                  {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
                                   "name": "x", "kind": 2, "startTimeUnixNano": "1544712660000000000",
                                   "endTimeUnixNano": "1544712661000000000",
                                   "attributes": [{"key": "n", "value": {"intValue": "9007199254740993"}}]},
                                  {"traceId": "W47/95gDgQPSabYzgT/GDA==", "spanId": "7uGbfsPBsXQ=", "name": "y",
                                   "kind": "SPAN_KIND_CLIENT", "status": {"code": "STATUS_CODE_ERROR"}}]}]}]}
    status, body, ctype = _post(port, "/v1/traces", json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert (status, json.loads(body), ctype) == (200, {}, "application/json")
    con = duckdb.connect()
    load_into(con, [str(r.out)])
    rows = con.execute("SELECT trace_id, span_id, kind, status_code, attributes::VARCHAR FROM spans "
                       "WHERE service = 'j' ORDER BY name").fetchall()
    # hex (upper case) and base64 ids of the same span read the same; a 64-bit int stays exact
    assert rows == [("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "SERVER", "UNSET",
                     '{"n":9007199254740993}'),
                    ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "CLIENT", "ERROR", "{}")]
    assert _stored(r) == (22, 0)


@pytest.mark.parametrize(("body", "headers", "status"), [
    (b"\xff\xff\xff garbage", {"Content-Type": "application/x-protobuf"}, 400),
    (b"{not json", {"Content-Type": "application/json"}, 400),
    (b"[1, 2]", {"Content-Type": "application/json"}, 400),
    (b"\x1f\x8b broken gzip", {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, 400),
    (b"x" * 300_000, {"Content-Type": "application/x-protobuf"}, 413),
    (gzip.compress(b"\0" * 5_000_000), {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, 413),
    (b"", {"Content-Type": "text/plain"}, 415),
])
def test_http_errors_then_keeps_serving(receiver, body, headers, status):
    r, _, port = receiver
    got, payload, ctype = _post(port, "/v1/traces", body, headers)
    assert got == status
    if ctype == "application/x-protobuf":
        assert status_pb2.Status.FromString(payload).message  # the spec's error body: a google.rpc.Status
    req, _ = otlp_requests.traces(3)
    assert _post(port, "/v1/traces", req.SerializeToString(), {"Content-Type": "application/x-protobuf"})[0] == 200
    assert _post(port, "/v1/logs", otlp_requests.logs(2).SerializeToString(),
                 {"Content-Type": "application/x-protobuf"})[0] == 200
    assert _post(port, "/v1/profiles", b"", {"Content-Type": "application/x-protobuf"})[0] == 404
    assert _stored(r) == (3, 2)


def test_receiver_in_an_instrumented_process_does_not_trace_its_own_exports(tmp_path):
    from opentelemetry.instrumentation.grpc import GrpcInstrumentorServer
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = GrpcInstrumentorServer()
    instrumentor.instrument(tracer_provider=provider)
    try:
        r = Receiver(tmp_path / "out", "127.0.0.1:0", None)
        grpc_port, _ = r.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                req, _ = otlp_requests.traces(4)
                channel.unary_unary(EXPORT_TRACES)(req.SerializeToString(), timeout=10)
        finally:
            r.stop()
        assert memory.get_finished_spans() == ()
        # the instrumentation is live: an ordinary server built the ordinary way is traced
        from concurrent import futures

        echo = grpc.method_handlers_generic_handler("t.Echo", {"Say": grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: req)})
        server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[echo])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert channel.unary_unary("/t.Echo/Say")(b"hi", timeout=10) == b"hi"
        finally:
            server.stop(None)
        assert [s.name for s in memory.get_finished_spans()] == ["/t.Echo/Say"]
    finally:
        instrumentor.uninstrument()
    assert _stored(r) == (4, 0)


def test_collect_command_line_errors_are_one_line(tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    jitrace = Path(sys.executable).parent / "jitrace"
    bad = subprocess.run([str(jitrace), "collect", "--out", str(tmp_path), "--grpc", "nonsense"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr == "jitrace collect: error: --grpc 'nonsense': expected HOST:PORT\n"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([str(jitrace), "collect", "--out", str(tmp_path), "--grpc", "off",
                               "--http", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2 and busy.stderr.count("\n") == 1
    assert busy.stderr.startswith("jitrace collect: error: cannot listen on")
