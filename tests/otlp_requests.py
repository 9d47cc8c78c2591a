"""Build OTLP export requests directly (protobuf), for receiver tests and benchmarks that need many exact spans."""

from __future__ import annotations

import os

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

T0 = 1_700_000_000_000_000_000


def kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, list):
        return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(values=[kv("", v).value for v in value])))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def traces(n: int, *, service: str = "svc", first: int = 0) -> tuple[ExportTraceServiceRequest, list[str]]:
    """A request with ``n`` gRPC-like spans (a few attributes each); returns it and the span ids (hex)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", service), kv("host.name", "bench-host")])
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.grpc"
    ids = []
    trace_id = os.urandom(16)
    for i in range(n):
        sid = os.urandom(8)
        ids.append(sid.hex())
        ss.spans.append(Span(
            trace_id=trace_id, span_id=sid, name="jitlab.Orders/Get", kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=T0 + (first + i) * 1000, end_time_unix_nano=T0 + (first + i) * 1000 + 500,
            attributes=[kv("rpc.system", "grpc"), kv("rpc.grpc.status_code", 7), kv("jit.token.ttl_s", -1.5),
                        kv("jit.token.verdict", "expired"), kv("jit.token.present", True)],
        ))
    return req, ids


def logs(n: int) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", "svc"))
    sl = rl.scope_logs.add()
    for i in range(n):
        sl.log_records.append(LogRecord(time_unix_nano=T0 + i, severity_number=13, severity_text="WARN",
                                        body=AnyValue(string_value=f"denied {i}"), trace_id=os.urandom(16),
                                        span_id=os.urandom(8), attributes=[kv("i", i)]))
    return req
