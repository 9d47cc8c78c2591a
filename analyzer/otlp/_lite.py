"""The OTLP trace export request as the converter reads it: opentelemetry's messages down to the span, whose
attributes, events and links stay serialized (``bytes``).

Protobuf reads a length-delimited field as bytes whatever message it holds, so this schema (same field numbers,
fewer types) parses any ``ExportTraceServiceRequest``. Why: reading a span's eight attributes as messages from Python
cost about 3 us (a wrapper object per KeyValue, then serializing it again for the fragment cache, _otlp.py); as bytes
they are the cache's keys as they arrive, and a KeyValue is parsed only on a cache miss. Events and links are
parsed when a span has any. What the converter does not read (trace_state, flags, dropped counts, schema urls) is
kept as unknown fields and not checked.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as Field
from opentelemetry.proto.common.v1 import common_pb2  # noqa: F401  (registers the types referred to below)
from opentelemetry.proto.resource.v1 import resource_pb2  # noqa: F401
from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: F401

_PACKAGE = "jitrace.otlp_lite"
_REPEATED = Field.LABEL_REPEATED


def _field(name: str, number: int, kind: int, label: int = Field.LABEL_OPTIONAL, message: str = "") -> Field:
    out = Field(name=name, number=number, type=kind, label=label)
    if message:
        out.type_name = message
    return out


def _file() -> descriptor_pb2.FileDescriptorProto:
    out = descriptor_pb2.FileDescriptorProto(
        name="jitrace/otlp_lite.proto", package=_PACKAGE, syntax="proto3",
        dependency=["opentelemetry/proto/common/v1/common.proto", "opentelemetry/proto/resource/v1/resource.proto",
                    "opentelemetry/proto/trace/v1/trace.proto"])
    # field numbers: opentelemetry/proto/trace/v1/trace.proto and collector/trace/v1/trace_service.proto
    out.message_type.add(name="Span", field=[
        _field("trace_id", 1, Field.TYPE_BYTES),
        _field("span_id", 2, Field.TYPE_BYTES),
        _field("parent_span_id", 4, Field.TYPE_BYTES),
        _field("name", 5, Field.TYPE_STRING),
        _field("kind", 6, Field.TYPE_INT32),  # an enum on the wire is an int32 varint
        _field("start_time_unix_nano", 7, Field.TYPE_FIXED64),
        _field("end_time_unix_nano", 8, Field.TYPE_FIXED64),
        _field("attributes", 9, Field.TYPE_BYTES, _REPEATED),  # KeyValue
        _field("events", 11, Field.TYPE_BYTES, _REPEATED),  # Span.Event
        _field("links", 13, Field.TYPE_BYTES, _REPEATED),  # Span.Link
        _field("status", 15, Field.TYPE_MESSAGE, message=".opentelemetry.proto.trace.v1.Status"),
    ])
    out.message_type.add(name="ScopeSpans", field=[
        _field("scope", 1, Field.TYPE_MESSAGE, message=".opentelemetry.proto.common.v1.InstrumentationScope"),
        _field("spans", 2, Field.TYPE_MESSAGE, _REPEATED, f".{_PACKAGE}.Span"),
    ])
    out.message_type.add(name="ResourceSpans", field=[
        _field("resource", 1, Field.TYPE_MESSAGE, message=".opentelemetry.proto.resource.v1.Resource"),
        _field("scope_spans", 2, Field.TYPE_MESSAGE, _REPEATED, f".{_PACKAGE}.ScopeSpans"),
    ])
    out.message_type.add(name="ExportTraceServiceRequest", field=[
        _field("resource_spans", 1, Field.TYPE_MESSAGE, _REPEATED, f".{_PACKAGE}.ResourceSpans"),
    ])
    return out


def _request_class() -> type:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("jitrace/otlp_lite.proto")
    except KeyError:
        pool.AddSerializedFile(_file().SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ExportTraceServiceRequest"))


TraceRequest = _request_class()
