"""A service and its client in one process, exporting spans over real OTLP/gRPC through a BatchSpanProcessor, driven
line by line from stdin by test_exporter_outage.py (the collector it exports to goes down and comes back there).

Commands (one JSON reply line each): ``calls N`` (N unary calls alternating a valid and an expired token: the count
of each status code), ``after N`` (N calls with the token of JIT_AFTER_TOKEN), ``stats`` (resident memory and the
SDK's own counts of spans dropped by the processor and of spans whose export failed), ``flush``, ``quit``.
Set ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true``: the SDK then counts its drops in its self-metrics.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import grpc
import plain_service as svc
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, GrpcInstrumentorServer
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

QUEUE = int(os.environ.get("JIT_QUEUE", "512"))


def _rss_kb() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _sdk_counts(reader: InMemoryMetricReader) -> dict[str, int]:
    """Spans the SDK says it dropped (processor queue full) and failed to export, from its self-metrics."""
    out = {"processor_dropped": 0, "processor_submitted": 0, "export_failed": 0, "exported": 0}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in getattr(metric.data, "data_points", ()):
                    attrs = dict(point.attributes or {})
                    if metric.name == "otel.sdk.processor.span.processed":
                        key = "processor_dropped" if "error.type" in attrs else "processor_submitted"
                    elif metric.name == "otel.sdk.exporter.span.exported":
                        key = "export_failed" if "error.type" in attrs else "exported"
                    else:
                        continue
                    out[key] += int(point.value)
    return out


def main() -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    provider = TracerProvider(resource=Resource.create({"service.name": "outage"}))
    exporter = OTLPSpanExporter(endpoint=os.environ["JIT_OTLP"], insecure=True, timeout=1, meter_provider=meters,
                                # reconnect soon after the collector is back (grpc's default backoff grows to 120 s)
                                channel_options=(("grpc.max_reconnect_backoff_ms", 500),
                                                 ("grpc.initial_reconnect_backoff_ms", 100)))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=QUEUE, max_export_batch_size=128,
                                                   schedule_delay_millis=100, meter_provider=meters))
    trace.set_tracer_provider(provider)
    GrpcInstrumentorClient().instrument()
    GrpcInstrumentorServer().instrument()
    import jitrace.instrumentation as ji

    ji.instrument()
    tokens = json.loads(Path(os.environ["JIT_TOKENS"]).read_text())
    server, port, _ = svc.serve_sync(svc.Verifier(Path(os.environ["JIT_PUBLIC_KEY_FILE"]).read_bytes()))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    unary = channel.unary_unary(svc.UNARY)

    def call(token: str) -> str:
        try:
            unary(svc.PERMISSION, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
            return "OK"
        except grpc.RpcError as error:
            return error.code().name

    print("ready", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "calls":
            codes = Counter(f"{kind}:{call(tokens[kind])}" for i in range(int(arg))
                            for kind in (("valid", "expired")[i % 2],))
            reply: dict = {"codes": dict(codes)}
        elif command == "after":
            reply = {"codes": dict(Counter(call(tokens["after"]) for _ in range(int(arg))))}
        elif command == "stats":
            reply = {"rss_kb": _rss_kb(), **_sdk_counts(reader)}
        elif command == "flush":
            reply = {"flushed": provider.force_flush(30_000)}
        else:
            break
        print(json.dumps(reply), flush=True)
    channel.close()
    server.stop(None)
    provider.shutdown()


if __name__ == "__main__":
    main()
