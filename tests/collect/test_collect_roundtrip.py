"""Spans and logs exported by the real OpenTelemetry SDK (gRPC and HTTP exporters) to a Receiver load back identical."""

from __future__ import annotations

import json

import duckdb
import jwt
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from jitrace.analyzer.load import load_into
from jitrace.collect import Receiver
from jitrace.instrumentation import contract

TOKEN = jwt.encode({"sub": "alice"}, "roundtrip-test-key-of-32-bytes!!", algorithm="HS256")  # JWT-shaped, never stored

ATTRS = {
    "s": "text ü",
    "i": 2**62 + 1,  # beyond a double's exact integers: must stay an exact integer
    "neg": -7,
    "f": 1.0,  # a float with no fraction must stay a float
    "f2": 0.1,
    "b": True,
    "strs": ("a", "b"),
    "ints": (1, 2, 3),
    "floats": (1.5, 2.0),
    "bools": (True, False),
    contract.TOKEN_TTL_S: -3.25,
    contract.POLICY_GRANTED: ("orders.read", "orders.write"),
    contract.RPC_GRPC_STATUS_CODE: 7,
}


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(tmp_path / "out", "127.0.0.1:0", "127.0.0.1:0")
    ports = r.start()
    yield r, ports
    r.stop()


def _span_exporter(proto: str, ports: tuple[int, int]):
    if proto == "grpc":
        from grpc import Compression as GrpcCompression
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=f"127.0.0.1:{ports[0]}", insecure=True, timeout=10,
                                compression=GrpcCompression.Gzip)
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"http://127.0.0.1:{ports[1]}/v1/traces", compression=Compression.Gzip,
                            timeout=10)


def _log_exporter(proto: str, ports: tuple[int, int]):
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(endpoint=f"127.0.0.1:{ports[0]}", insecure=True, timeout=10)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint=f"http://127.0.0.1:{ports[1]}/v1/logs", timeout=10)


@pytest.mark.parametrize("proto", ["grpc", "http"])
def test_sdk_spans_round_trip_identical(receiver, proto):
    rec, ports = receiver
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": f"svc-{proto}", "host.name": "h1"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(_span_exporter(proto, ports), max_export_batch_size=7))
    tracer = provider.get_tracer("roundtrip.scope")
    for i in range(20):
        with tracer.start_as_current_span("jitlab.Orders/Get", kind=SpanKind.CLIENT, attributes=ATTRS) as parent:  # noqa: SIM117
            with tracer.start_as_current_span("inner", kind=SpanKind.SERVER,
                                              links=[Link(parent.get_span_context(), {"why": "test"})]) as child:
                child.add_event(contract.TOKEN_CHECK_EVENT, {contract.TOKEN_VERDICT: "expired", "n": i})
                child.set_status(Status(StatusCode.ERROR, "denied"))
    provider.shutdown()  # flushes the batch processor: every batch was acknowledged

    con = duckdb.connect()
    report = load_into(con, [str(rec.out)])
    expected = memory.get_finished_spans()
    assert (report.spans, report.bad_records) == (len(expected), 0) == (40, 0)
    got = {r[0]: r for r in con.execute(
        "SELECT span_id, trace_id, parent_span_id, name, kind, start_ns, end_ns, status_code, status_message, "
        "service, resource, attributes, events, links, scope FROM spans").fetchall()}
    for s in expected:
        ctx = s.context
        row = got[f"{ctx.span_id:016x}"]
        assert row[1] == f"{ctx.trace_id:032x}"
        assert row[2] == (f"{s.parent.span_id:016x}" if s.parent else None)
        assert row[3:10] == (s.name, s.kind.name, s.start_time, s.end_time, s.status.status_code.name,
                             s.status.description, f"svc-{proto}")
        assert json.loads(row[10])["host.name"] == "h1"
        assert row[14] == "roundtrip.scope"
        attrs = json.loads(row[11])
        want = {k: list(v) if isinstance(v, tuple) else v for k, v in s.attributes.items()}
        assert attrs == want
        # types survive, not just values: 1.0 stays a float, ints stay exact ints
        assert all(type(attrs[k]) is type(want[k]) for k in want)
        if s.name == "inner":
            (event,) = json.loads(row[12])
            assert event["name"] == contract.TOKEN_CHECK_EVENT and event["time_ns"] == s.events[0].timestamp
            assert event["attributes"][contract.TOKEN_VERDICT] == "expired"
            (link,) = json.loads(row[13])
            assert link["span_id"] == row[2] and link["attributes"] == {"why": "test"}
    # the analyzer extracts jit.* values with DuckDB's JSON functions: they come back typed
    ttl, status = con.execute(
        f"SELECT CAST(attributes->>'$.\"{contract.TOKEN_TTL_S}\"' AS DOUBLE), "
        f"CAST(attributes->>'$.\"{contract.RPC_GRPC_STATUS_CODE}\"' AS INTEGER) FROM spans WHERE kind='CLIENT' LIMIT 1"
    ).fetchone()
    assert (ttl, status) == (-3.25, 7)
    assert rec.stats["spans"] == 40
    # sources name the Parquet file each row came from
    assert all(src.endswith(".parquet") and "/spans/hour=" in src
               for (src,) in con.execute("SELECT source FROM spans").fetchall())


@pytest.mark.parametrize("proto", ["grpc", "http"])
def test_sdk_logs_round_trip(receiver, proto):
    rec, ports = receiver
    provider = LoggerProvider(resource=Resource.create({"service.name": "logsvc"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(_log_exporter(proto, ports)))
    logger = provider.get_logger("roundtrip.logs")
    tracer = TracerProvider().get_tracer("t")
    sent = []
    for i in range(12):
        with tracer.start_as_current_span("call") as span:
            ctx = span.get_span_context()
            body = f"token expired for call {i}: Bearer {TOKEN}" if i % 3 == 0 else f"call {i} denied"
            logger.emit(timestamp=1_700_000_000_123_456_789 + i, severity_number=SeverityNumber.WARN,
                        severity_text="WARNING", body=body,
                        attributes={"i": i, "ratio": 0.5, "ok": False, contract.DENIAL_REASON: "TOKEN_EXPIRED"})
            sent.append((f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", 1_700_000_000_123_456_789 + i, body, i))
    provider.shutdown()

    con = duckdb.connect()
    report = load_into(con, [str(rec.out)])
    assert (report.logs, report.spans, report.bad_records) == (12, 0, 0)
    rows = {r[0]: r for r in con.execute(
        "SELECT time_ns, trace_id, span_id, severity_number, severity_text, body, service, attributes, scope "
        "FROM logs").fetchall()}
    for trace_id, span_id, t, body, i in sent:
        row = rows[t]
        assert row[1:5] == (trace_id, span_id, SeverityNumber.WARN.value, "WARNING")
        assert row[6] == "logsvc" and row[8] == "roundtrip.logs"
        assert json.loads(row[7]) == {"i": i, "ratio": 0.5, "ok": False, contract.DENIAL_REASON: "TOKEN_EXPIRED"}
        if TOKEN in body:
            assert row[5] == f"token expired for call {i}: Bearer [REDACTED]"
        else:
            assert row[5] == body
    everything = "".join(str(r) for r in con.execute("SELECT * FROM logs").fetchall())
    assert TOKEN not in everything and TOKEN.split(".")[2] not in everything
