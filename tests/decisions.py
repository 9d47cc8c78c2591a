"""Recorded policy decisions on server spans, written in each input format the analyzer reads, for replay tests.

A ``Decision`` is one server call's decision as the instrumentation records it (``jit.policy.*``, the token subject,
the gRPC status). ``write(decisions, path, fmt)`` writes them as OTLP JSON lines, OTLP protobuf, Zipkin v2 JSON,
Jaeger JSON (array attributes as the JSON text exporters put in string tags there) or Parquet in the spans schema.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from otlp_requests import kv as _kv

from jitrace.analyzer.schema import SPANS, arrow
from jitrace.instrumentation import contract as c

T0_NS = 1_760_000_000_000_000_000
FORMATS = ("otlp_json", "otlp_proto", "zipkin", "jaeger", "parquet")


@dataclass(frozen=True)
class Decision:
    n: int  # the call's number: its trace id and time
    decision: str  # allow / deny
    request: tuple[str, ...] | None
    granted: tuple[str, ...] = ()
    engine: str | None = "casbin"
    policy_id: str | None = "inventory"
    version: str | None = "v1"
    rule: str | None = None
    method: str = "Read"
    subject: str | None = None  # jit.token.sub; None: the request's subject

    @property
    def trace_id(self) -> str:
        return f"{self.n + 1:032x}"

    @property
    def span_id(self) -> str:
        return f"{self.n + 1:016x}"

    def attributes(self) -> dict:
        attrs: dict = {"rpc.system": "grpc", "rpc.service": "jitlab.Inventory", "rpc.method": self.method,
                       "rpc.grpc.status_code": 0 if self.decision == "allow" else 7,
                       c.POLICY_DECISION: self.decision, c.POLICY_GRANTED: list(self.granted)}
        subject = self.subject or (self.request[0] if self.request else None)
        for name, value in ((c.POLICY_ENGINE, self.engine), (c.POLICY_ID, self.policy_id),
                            (c.POLICY_VERSION, self.version), (c.POLICY_RULE, self.rule), (c.TOKEN_SUB, subject)):
            if value is not None:
                attrs[name] = value
        if self.request is not None:
            attrs[c.POLICY_REQUEST] = list(self.request)
        return attrs



def _request(decisions: list[Decision]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", "inventory-r1"), _kv("host.name", "r1-host")])
    ss = rs.scope_spans.add()
    for d in decisions:
        ss.spans.append(Span(trace_id=bytes.fromhex(d.trace_id), span_id=bytes.fromhex(d.span_id),
                             name=f"jitlab.Inventory/{d.method}", kind=Span.SPAN_KIND_SERVER,
                             start_time_unix_nano=T0_NS + d.n * 1000, end_time_unix_nano=T0_NS + d.n * 1000 + 500,
                             attributes=[_kv(k, v) for k, v in d.attributes().items()]))
    return req


def _tag(value: object) -> str | int:
    return json.dumps(value) if isinstance(value, list) else value  # type: ignore[return-value]


def write(decisions: list[Decision], path: Path, fmt: str) -> Path:
    if fmt == "otlp_json":
        path.write_text(MessageToJson(_request(decisions), indent=None) + "\n")
    elif fmt == "otlp_proto":
        body = _request(decisions).SerializeToString()
        path.write_bytes(struct.pack(">I", len(body)) + body)
    elif fmt == "zipkin":
        path.write_text(json.dumps([
            {"traceId": d.trace_id, "id": d.span_id, "kind": "SERVER", "name": f"jitlab.Inventory/{d.method}",
             "timestamp": (T0_NS + d.n * 1000) // 1000, "duration": 1,
             "localEndpoint": {"serviceName": "inventory-r1"},
             "tags": {k: str(_tag(v)) for k, v in d.attributes().items()}} for d in decisions]))
    elif fmt == "jaeger":
        traces = []
        for d in decisions:
            tags = [{"key": "span.kind", "type": "string", "value": "server"},
                    *({"key": k, "type": "int64" if isinstance(v, int) else "string", "value": _tag(v)}
                      for k, v in d.attributes().items())]
            span = {"traceID": d.trace_id, "spanID": d.span_id, "operationName": f"jitlab.Inventory/{d.method}",
                    "processID": "p1", "startTime": (T0_NS + d.n * 1000) // 1000, "duration": 1, "tags": tags}
            traces.append({"traceID": d.trace_id, "processes": {"p1": {"serviceName": "inventory-r1"}},
                           "spans": [span]})
        path.write_text(json.dumps({"data": traces}))
    elif fmt == "parquet":
        rows = [{"trace_id": d.trace_id, "span_id": d.span_id, "parent_span_id": None,
                 "name": f"jitlab.Inventory/{d.method}", "kind": "SERVER", "start_ns": T0_NS + d.n * 1000,
                 "end_ns": T0_NS + d.n * 1000 + 500, "status_code": "UNSET", "status_message": None,
                 "service": "inventory-r1", "resource": json.dumps({"service.name": "inventory-r1"}),
                 "attributes": json.dumps(d.attributes()), "events": "[]", "links": "[]", "scope": None,
                 "source": None} for d in decisions]
        pq.write_table(pa.Table.from_pylist(rows, schema=arrow(SPANS)), path)
    else:
        raise ValueError(fmt)
    return path
