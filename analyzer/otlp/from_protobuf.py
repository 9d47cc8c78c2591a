"""OTLP protobuf messages -> rows in the normalized schema (the receiver's and the protobuf file loader's converter).

Per-span Python work is the receiver's cost, so this walks the messages directly (no JSON detour) and encodes each
attribute map once. A span or log record that cannot be read is counted, not fatal. ``spans_table`` is the fast path
for trace requests: the C decoder (_protobuf_native.c) gives the same rows as Arrow columns, or refuses a request it
might read otherwise, which ``add_traces`` then reads.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from jitrace.analyzer import schema
from jitrace.analyzer.otlp._lite import TraceRequest
from jitrace.analyzer.redact import redact, redact_value
from jitrace.analyzer.rows import BadRecord, Rows, buffers_table, bytes_id, to_json

try:
    from jitrace.analyzer.otlp import _protobuf_native
except ImportError:  # built without a C compiler (setup.py: optional)
    _protobuf_native = None

if TYPE_CHECKING:
    import pyarrow as pa

_KINDS = schema.SPAN_KINDS
_STATUS = schema.STATUS_CODES
_SIGNED = 2**63


def _array(v: Any) -> list:
    return [any_value(x) for x in v.array_value.values]


def _kvlist(v: Any) -> dict:
    return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}


def _bytes(v: Any) -> str:
    return base64.b64encode(v.bytes_value).decode()  # as the OTLP JSON mapping spells bytes


# oneof name -> getter; one dict lookup instead of a chain of comparisons per attribute
_GET = {
    "string_value": lambda v: v.string_value,
    "int_value": lambda v: v.int_value,
    "double_value": lambda v: v.double_value,
    "bool_value": lambda v: v.bool_value,
    "array_value": _array,
    "kvlist_value": _kvlist,
    "bytes_value": _bytes,
    None: lambda v: None,
}


def any_value(v: Any) -> Any:
    return _GET[v.WhichOneof("value")](v)


# Serialized KeyValue -> (key, '"key":value' JSON text). Telemetry repeats most attribute pairs (rpc.system=grpc,
# the service, the method, a status code...), and a span's attributes arrive as bytes (_otlp_lite.py): a repeated
# pair costs one dict lookup. Pairs seen once (ids, times) are parsed. Bounded: cleared when full rather than grown
# without end.
_FRAGMENTS: dict[bytes, tuple[str, str]] = {}
_FRAGMENTS_MAX = 50_000


def _fragment(raw: bytes) -> tuple[str, str]:
    kv = KeyValue.FromString(raw)  # DecodeError: the request is not OTLP
    value = kv.value
    out = (kv.key, f"{to_json(kv.key)}:{to_json(_GET[value.WhichOneof('value')](value))}")
    if len(_FRAGMENTS) >= _FRAGMENTS_MAX:
        _FRAGMENTS.clear()
    _FRAGMENTS[raw] = out
    return out


def attrs_json(kvs: Any) -> str:
    """Serialized KeyValues -> the attribute map's JSON text."""
    if not kvs:
        return "{}"
    get = _FRAGMENTS.get
    pairs = [get(raw) or _fragment(raw) for raw in kvs]
    # dict(): a repeated key keeps its first place and its last value, as a dict comprehension would
    return "{" + ",".join(dict(pairs).values()) + "}"


def _ns(value: int) -> int:
    return value - 2**64 if value >= _SIGNED else value  # fixed64 -> the BIGINT column


def _resource(res: Any) -> tuple[str | None, str]:
    attrs = {kv.key: any_value(kv.value) for kv in res.attributes}
    service = attrs.get("service.name")
    return (service if isinstance(service, str) else None), to_json(attrs)


def _events(s: Any) -> str:
    events = [Span.Event.FromString(raw) for raw in s.events]
    return to_json([{"name": e.name, "time_ns": _ns(e.time_unix_nano),
                     "attributes": {kv.key: any_value(kv.value) for kv in e.attributes}} for e in events])


def _links(s: Any) -> str:
    links = [Span.Link.FromString(raw) for raw in s.links]
    return to_json([{"trace_id": bytes_id(ln.trace_id, 16, "links.trace_id"),
                     "span_id": bytes_id(ln.span_id, 8, "links.span_id"),
                     "attributes": {kv.key: any_value(kv.value) for kv in ln.attributes}} for ln in links])


def _records(resources: Any, scoped: str, items: str) -> Iterator[tuple[str | None, str, str | None, Any]]:
    """(service, resource JSON, scope name, record) for every record (span or log) of a request's resources."""
    for r in resources:
        service, resource = _resource(r.resource)
        for scoped_items in getattr(r, scoped):
            scope = scoped_items.scope.name or None
            for record in getattr(scoped_items, items):
                yield service, resource, scope, record


def parse_traces(body: bytes) -> Any:
    """An export request's bytes -> the message ``add_traces`` reads (DecodeError: not OTLP)."""
    return TraceRequest.FromString(body)


def spans_table(body: bytes, source: str | None) -> tuple[pa.Table, tuple[str, ...]] | None:
    """The spans of a trace export request's bytes as a table of schema.SPANS (its text not yet redacted), and the
    text columns that may hold a credential; None where ``add_traces`` must read the request (the C decoder refused
    it, or was not built)."""
    if _protobuf_native is None:
        return None
    try:
        n, columns, hinted = _protobuf_native.traces(body, source)
    except _protobuf_native.Refused:
        return None
    names = schema.SPANS.names
    return buffers_table(n, columns), tuple(names[i] for i in hinted if names[i] in schema.SPAN_TEXT_COLUMNS)


def add_traces(req: Any, rows: Rows, source: str | None) -> int:
    """Append the spans of ``req`` (from ``parse_traces``) to ``rows``; returns how many spans it held (read or not).
    DecodeError: an attribute, event or link is not OTLP (nothing is stored from such a request)."""
    n = 0
    append = rows.spans.append
    for n, (service, resource, scope, s) in enumerate(_records(req.resource_spans, "scope_spans", "spans"), 1):
        try:
            tid, sid, pid = s.trace_id, s.span_id, s.parent_span_id
            if len(tid) != 16 or len(sid) != 8 or tid.count(0) == 16 or sid.count(0) == 8:
                bytes_id(tid, 16, "trace_id")
                bytes_id(sid, 8, "span_id")
            kind = s.kind
            code = s.status.code
            append((
                tid.hex(),
                sid.hex(),
                bytes_id(pid, 8, "parent_span_id", required=False) if pid else None,
                s.name,
                _KINDS[kind] if 0 <= kind < 6 else "UNSPECIFIED",
                _ns(s.start_time_unix_nano),
                _ns(s.end_time_unix_nano),
                _STATUS[code] if 0 <= code < 3 else "UNSET",
                s.status.message or None,
                service,
                resource,
                attrs_json(s.attributes),
                _events(s) if s.events else "[]",
                _links(s) if s.links else "[]",
                scope,
                source,
            ))
        except BadRecord as exc:
            rows.bad_record(f"{source or 'request'}#{n - 1}", exc)
    return n


def _body(v: Any) -> str | None:
    if v.WhichOneof("value") is None:
        return None
    value = any_value(v)
    return redact(value) if isinstance(value, str) else to_json(redact_value(value))


def add_logs(req: ExportLogsServiceRequest, rows: Rows, source: str | None) -> int:
    """Append the request's log records to ``rows`` (tokens redacted); returns how many it held."""
    n = 0
    append = rows.logs.append
    for n, (service, resource, scope, r) in enumerate(_records(req.resource_logs, "scope_logs", "log_records"), 1):
        try:
            observed = _ns(r.observed_time_unix_nano) or None
            append((
                _ns(r.time_unix_nano) or observed,
                observed,
                bytes_id(r.trace_id, 16, "trace_id", required=False),
                bytes_id(r.span_id, 8, "span_id", required=False),
                r.severity_number or None,
                r.severity_text or None,
                _body(r.body),
                service,
                resource,
                to_json(redact_value({kv.key: any_value(kv.value) for kv in r.attributes}))
                if r.attributes else "{}",
                scope,
                source,
            ))
        except BadRecord as exc:
            rows.bad_record(f"{source or 'request'}#{n - 1}", exc)
    return n
