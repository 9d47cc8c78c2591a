"""TEMPORARY stand-in for ``jitrace.analyzer.collect.Receiver`` until it lands: OTLP/gRPC in, OTLP JSON lines out
(the OpenTelemetry Collector file exporter's format) under ``OUT/otlp/``.
"""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Receiver:
    def __init__(self, out_dir: str | Path, grpc_addr: str = "127.0.0.1:4317", http_addr: str = "127.0.0.1:4318"):
        self._dir = Path(out_dir) / "otlp"
        self._grpc_addr = grpc_addr
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    def _append(self, name: str, message: object) -> None:
        line = MessageToJson(message, indent=None)  # type: ignore[arg-type]
        with self._lock, open(self._dir / name, "a") as f:
            f.write(line.replace("\n", " ") + "\n")

    def start(self) -> tuple[int, int]:
        self._dir.mkdir(parents=True, exist_ok=True)
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802
                receiver._append("traces.jsonl", request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):  # noqa: N802
                receiver._append("logs.jsonl", request)
                return logs_service_pb2.ExportLogsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self._server)
        port = self._server.add_insecure_port(self._grpc_addr)
        self._server.start()
        return port, 0

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(1).wait()
