"""Hostile payloads on the receiver's decoders: any bytes either load or are refused as not OTLP (INVALID_ARGUMENT /
400); never another exception, never a hang."""

from __future__ import annotations

import json

import otlp_requests
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitrace.collect import Receiver

_REAL = otlp_requests.traces(3)[0].SerializeToString()


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    return Receiver(tmp_path_factory.mktemp("hostile") / "out", None, None)  # ingest only: no sockets


def _ingest_or_refuse(receiver: Receiver, kind: str, body: bytes, encoding: str) -> None:
    try:
        rejected, message = receiver.ingest(kind, body, encoding)
    except (DecodeError, ValueError, UnicodeDecodeError):
        return  # the handlers answer INVALID_ARGUMENT / 400
    assert rejected >= 0 and "\n" not in message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=300),
                      st.builds(lambda cut, flip: bytes(b ^ flip if i == cut else b for i, b in enumerate(_REAL)),
                                st.integers(0, len(_REAL) - 1), st.integers(1, 255)),
                      st.integers(0, len(_REAL)).map(lambda n: _REAL[:n])),
       kind=st.sampled_from(["traces", "logs"]))
def test_random_and_mutated_protobuf_bodies(receiver, body, kind):
    _ingest_or_refuse(receiver, kind, body, "protobuf")


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                   max_size=4), max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(_json, st.fixed_dictionaries({"resourceSpans": _json}),
                     st.fixed_dictionaries({"resourceSpans": st.lists(st.fixed_dictionaries(
                         {"scopeSpans": st.lists(st.fixed_dictionaries({"spans": st.lists(_json, max_size=3)}),
                                                 max_size=2)}), max_size=2)})),
       kind=st.sampled_from(["traces", "logs"]))
def test_hostile_json_bodies(receiver, doc, kind):
    _ingest_or_refuse(receiver, kind, json.dumps(doc).encode(), "json")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=200))
def test_non_utf8_json_bodies(receiver, body):
    _ingest_or_refuse(receiver, "traces", body, "json")


_scalar = st.one_of(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1), st.floats(), st.booleans())


@settings(max_examples=150, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from(["a", "b", "é", "rpc.system"]),
                                st.one_of(_scalar, st.lists(_scalar, max_size=3))), max_size=8))
def test_attribute_json_from_cached_fragments_equals_the_plain_conversion(pairs):
    """Repeated keys keep their first place and last value; a cached pair gives the same text as a fresh one. The
    attributes are read as the receiver reads them: as bytes, through the request schema of _lite.py."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from jitrace.analyzer.otlp import from_protobuf
    from jitrace.analyzer.rows import to_json

    span = Span(attributes=[otlp_requests.kv(k, v) for k, v in pairs])
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.append(span)
    raw = from_protobuf.parse_traces(req.SerializeToString()).resource_spans[0].scope_spans[0].spans[0].attributes
    expected = to_json({kv.key: from_protobuf.any_value(kv.value) for kv in span.attributes})
    assert from_protobuf.attrs_json(raw) == expected
    assert from_protobuf.attrs_json(raw) == expected  # now from the cache


@pytest.mark.parametrize("field", ["attributes", "events", "links"])
def test_a_span_part_that_is_not_otlp_refuses_the_whole_request(receiver, field):
    """Attributes, events and links are parsed after the request (they arrive as bytes): one that is not a
    message still makes the request INVALID_ARGUMENT, as the full parser would, and nothing of it is stored."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from jitrace.analyzer.otlp import _lite

    req = _lite.TraceRequest.FromString(otlp_requests.traces(3)[0].SerializeToString())
    getattr(req.resource_spans[0].scope_spans[0].spans[1], field).append(b"\x0a\xff\xff")  # a cut-off field
    body = req.SerializeToString()
    with pytest.raises(DecodeError):
        ExportTraceServiceRequest.FromString(body)
    before = dict(receiver.stats)
    with pytest.raises(DecodeError):
        receiver.ingest("traces", body, "protobuf")
    assert receiver.stats == before
