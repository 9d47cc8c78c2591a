"""The receiver reads trace requests through a schema of its own (collect/_otlp_lite.py: OpenTelemetry's field numbers,
a span's attributes, events and links left as bytes). Whatever a span holds, including the fields that schema skips,
its row must be what OpenTelemetry's own message classes say, read the plain way."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from jitrace.analyzer import schema
from jitrace.analyzer.otlp import from_protobuf
from jitrace.analyzer.rows import Rows, to_json

_leaf = st.one_of(
    st.text(max_size=6).map(lambda s: AnyValue(string_value=s)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.floats().map(lambda f: AnyValue(double_value=f)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.binary(max_size=4).map(lambda b: AnyValue(bytes_value=b)),
    st.just(AnyValue()),
)
_value = st.one_of(
    _leaf,
    st.lists(_leaf, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
    st.lists(st.builds(KeyValue, key=st.sampled_from(["x", "y"]), value=_leaf), max_size=2)
    .map(lambda kvs: AnyValue(kvlist_value=KeyValueList(values=kvs))),
)
_attributes = st.lists(st.builds(KeyValue, key=st.sampled_from(["rpc.method", "jit.token.ttl_s", "a", "é\"\n"]),
                                 value=_value), max_size=5)
_ids = st.binary(min_size=8, max_size=8).filter(any)


def _plain(v: AnyValue):
    """AnyValue -> Python, written out from the OTLP JSON mapping (the oracle; not _otlp's code)."""
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_plain(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, which) if which else None


@st.composite
def _spans(draw) -> Span:
    span = Span(trace_id=draw(st.binary(min_size=16, max_size=16).filter(any)), span_id=draw(_ids),
                parent_span_id=draw(st.one_of(st.just(b""), _ids)), name=draw(st.text(max_size=6)),
                kind=draw(st.integers(0, 5)), start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
                end_time_unix_nano=draw(st.integers(0, 2**64 - 1)), attributes=draw(_attributes),
                status=Status(code=draw(st.integers(0, 2)), message=draw(st.sampled_from(["", "denied"]))),
                # what the receiver's schema skips: kept as unknown fields, never read
                trace_state=draw(st.sampled_from(["", "vendor=1"])), flags=draw(st.integers(0, 2**32 - 1)),
                dropped_attributes_count=draw(st.integers(0, 9)), dropped_events_count=draw(st.integers(0, 9)))
    for _ in range(draw(st.integers(0, 2))):
        span.events.add(name=draw(st.text(max_size=4)), time_unix_nano=draw(st.integers(0, 2**63 - 1)),
                        attributes=draw(_attributes))
    for _ in range(draw(st.integers(0, 2))):
        span.links.add(trace_id=draw(st.binary(min_size=16, max_size=16).filter(any)), span_id=draw(_ids),
                       attributes=draw(_attributes), trace_state="t=1")
    return span


def _expected(span: Span, service, resource, scope, source) -> tuple:
    attrs = lambda kvs: {kv.key: _plain(kv.value) for kv in kvs}  # noqa: E731  (a repeated key: the last value)
    signed = lambda n: n - 2**64 if n >= 2**63 else n  # noqa: E731
    return (
        span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex() or None, span.name,
        schema.SPAN_KINDS[span.kind], signed(span.start_time_unix_nano), signed(span.end_time_unix_nano),
        schema.STATUS_CODES[span.status.code], span.status.message or None, service, resource,
        to_json(attrs(span.attributes)),
        to_json([{"name": e.name, "time_ns": e.time_unix_nano, "attributes": attrs(e.attributes)}
                 for e in span.events]),
        to_json([{"trace_id": ln.trace_id.hex(), "span_id": ln.span_id.hex(), "attributes": attrs(ln.attributes)}
                 for ln in span.links]),
        scope, source,
    )


@settings(max_examples=200, deadline=None)
@given(spans=st.lists(_spans(), min_size=1, max_size=4), service=st.sampled_from([None, "orders"]))
def test_rows_read_through_the_receivers_schema_equal_the_plain_reading(spans, service):
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    if service:
        rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    rs.schema_url = "https://opentelemetry.io/schemas/1.21.0"
    ss = rs.scope_spans.add()
    ss.scope.name = "io.grpc"
    ss.scope.version = "1.0"
    ss.spans.extend(spans)
    rows = Rows()
    seen = from_protobuf.add_traces(from_protobuf.parse_traces(req.SerializeToString()), rows, "f.binpb@0")
    resource = to_json({"service.name": service} if service else {})
    assert rows.bad == 0 and seen == len(spans)
    assert rows.spans == [_expected(s, service, resource, "io.grpc", "f.binpb@0") for s in spans]
