"""TEMPORARY stand-in for ``jitrace.analyzer.collect.Receiver`` until it lands: OTLP/gRPC in, Parquet out in
analyzer/schema.py's SPANS schema (``OUT/spans/hour=.../<uuid>.parquet``). Logs are not kept.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from jitrace.analyzer import schema


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> str:
    return json.dumps({kv.key: _value(kv.value) for kv in kvs})


class Receiver:
    def __init__(self, out_dir: str | Path, grpc_addr: str = "127.0.0.1:4317", http_addr: str = "127.0.0.1:4318"):
        self._out = Path(out_dir)
        self._grpc_addr = grpc_addr
        self._lock = threading.Lock()
        self._rows: list[dict[str, Any]] = []
        self._server: grpc.Server | None = None

    def _add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        rows = []
        for rs in request.resource_spans:
            resource = _attrs(rs.resource.attributes)
            service = json.loads(resource).get("service.name")
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    rows.append({
                        "trace_id": sp.trace_id.hex(), "span_id": sp.span_id.hex(),
                        "parent_span_id": sp.parent_span_id.hex() or None, "name": sp.name,
                        "kind": schema.SPAN_KINDS[sp.kind], "start_ns": sp.start_time_unix_nano,
                        "end_ns": sp.end_time_unix_nano, "status_code": schema.STATUS_CODES[sp.status.code],
                        "status_message": sp.status.message or None, "service": service, "resource": resource,
                        "attributes": _attrs(sp.attributes),
                        "events": json.dumps([{"name": e.name, "time_ns": e.time_unix_nano,
                                               "attributes": json.loads(_attrs(e.attributes))} for e in sp.events]),
                        "links": json.dumps([{"trace_id": ln.trace_id.hex(), "span_id": ln.span_id.hex(),
                                              "attributes": json.loads(_attrs(ln.attributes))} for ln in sp.links]),
                        "scope": ss.scope.name, "source": "otlp",
                    })
        with self._lock:
            self._rows += rows

    def start(self) -> tuple[int, int]:
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802
                receiver._add(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):  # noqa: N802
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
        hour = time.strftime("%Y-%m-%dT%H", time.gmtime())
        folder = self._out / "spans" / f"hour={hour}"
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            table = pa.Table.from_pylist(self._rows, schema=schema.SPANS)
        pq.write_table(table, folder / f"{uuid.uuid4()}.parquet")
