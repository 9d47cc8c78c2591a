"""The C decoder of OTLP/protobuf trace requests (analyzer/otlp/_protobuf_native.c, the receiver's fast path) gives
exactly the rows from_protobuf gives, redacted alike, or refuses the request and from_protobuf reads it: generated
requests (odd values, duplicate keys, bad ids, unknown and repeated fields, cut or flipped bytes) are read both ways
and compared. Where the C decoder was not built, test_the_c_decoder_is_built fails."""

from __future__ import annotations

import math
import struct

import jwt
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from jitrace.analyzer import redact, schema
from jitrace.analyzer.otlp import from_protobuf
from jitrace.analyzer.rows import Rows, table

TOKEN = jwt.encode({"sub": "bob", "exp": 1}, "protobuf-fast-path-test-key-32-bytes", algorithm="HS256")  # at run time
TEXT = st.one_of(st.text(max_size=10), st.sampled_from([
    "", "grpc", "é\"\\/\n\t\x00\x1f\x7f\u2028😀", f"Bearer {TOKEN}", f"basic {TOKEN[:20]}", "BEARER a.b",
    "Baſic abc.def", "eyJhbGciOi.eyJzdWIi.sig", "nullable", "{}"]))
KEYS = st.one_of(st.text(max_size=6), st.sampled_from(["service.name", "rpc.grpc.status_code", "jit.token.ttl_s", ""]))
DOUBLES = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1e16, 1e22, 5e-324, math.nan, -math.inf, 123456789.125]))


def test_the_c_decoder_is_built():
    # setup.py builds it where a C compiler is (it is optional there): CI has one, so a failed build fails here
    assert from_protobuf._protobuf_native is not None, "analyzer/otlp/_protobuf_native.c was not built"


SCALARS = st.one_of(
    st.builds(lambda s: AnyValue(string_value=s), TEXT),
    st.builds(lambda b: AnyValue(bool_value=b), st.booleans()),
    st.builds(lambda i: AnyValue(int_value=i), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda d: AnyValue(double_value=d), DOUBLES),
    st.builds(lambda b: AnyValue(bytes_value=b), st.binary(max_size=7)),
    st.just(AnyValue()),
)


def _nested(values):
    return st.one_of(
        st.builds(lambda vs: AnyValue(array_value=ArrayValue(values=vs)), st.lists(values, max_size=3)),
        st.builds(lambda kvs: AnyValue(kvlist_value=KeyValueList(values=kvs)),
                  st.lists(st.builds(lambda k, v: KeyValue(key=k, value=v), KEYS, values), max_size=3,
                           unique_by=lambda kv: kv.key)))  # duplicates: _kvs and the cases below


VALUES = st.recursive(SCALARS, _nested, max_leaves=6)
_KV = st.one_of(st.builds(lambda k, v: KeyValue(key=k, value=v), KEYS, VALUES),
                st.builds(lambda k: KeyValue(key=k), KEYS))


def _kvs(max_size: int = 4, unique: bool = False):
    return st.lists(_KV, max_size=max_size, unique_by=(lambda kv: kv.key) if unique else None)


def _id(size: int, plain: bool):
    good = st.binary(min_size=size, max_size=size).filter(any)
    return good if plain else st.one_of(good, st.just(b""), st.just(bytes(size)), st.binary(max_size=size + 1))


@st.composite
def _span(draw, plain: bool) -> Span:
    s = Span(trace_id=draw(_id(16, plain)), span_id=draw(_id(8, plain)), name=draw(TEXT),
             kind=draw(st.integers(-1, 7)), start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
             end_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
             attributes=draw(_kvs(unique=plain)), trace_state=draw(st.text(max_size=4)),
             dropped_attributes_count=draw(st.integers(0, 2)), flags=draw(st.integers(0, 2**32 - 1)))
    parent = draw(st.one_of(st.just(b""), st.just(bytes(8)), _id(8, plain)))
    if parent:
        s.parent_span_id = parent
    if draw(st.booleans()):
        s.status.CopyFrom(Status(code=draw(st.integers(-1, 4)), message=draw(TEXT)))
    for _ in range(draw(st.integers(0, 2))):
        s.events.add(time_unix_nano=draw(st.integers(0, 2**64 - 1)), name=draw(TEXT),
                     attributes=draw(_kvs(max_size=2, unique=plain)))
    for _ in range(draw(st.integers(0, 2))):
        s.links.add(trace_id=draw(_id(16, plain)), span_id=draw(_id(8, plain)), trace_state=draw(st.text(max_size=3)),
                    attributes=draw(_kvs(max_size=2, unique=plain)))
    return s


@st.composite
def requests(draw, plain: bool = False) -> ExportTraceServiceRequest:
    """A trace export request; ``plain``: unique keys and good ids, as instrumentations send (the C decoder reads)."""
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(draw(_kvs(unique=plain)))
        if draw(st.booleans()):
            rs.resource.attributes.add(key="service.name").value.CopyFrom(draw(VALUES))
            if plain and len({kv.key for kv in rs.resource.attributes}) < len(rs.resource.attributes):
                del rs.resource.attributes[-1]
        rs.schema_url = draw(st.text(max_size=3))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            if draw(st.booleans()):
                ss.scope.name, ss.scope.version = draw(TEXT), draw(TEXT)
                ss.scope.attributes.extend(draw(_kvs(max_size=2)))
            ss.spans.extend(draw(st.lists(_span(plain), max_size=3)))
    return req


def _python(body: bytes, source: str | None) -> Rows:
    rows = Rows()
    from_protobuf.add_traces(from_protobuf.parse_traces(body), rows, source)
    return rows


def _check(body: bytes, source: str | None = None) -> bool:
    """Both readers of ``body`` agree; returns whether the C decoder read it."""
    fast = from_protobuf.spans_table(body, source)
    try:
        rows = _python(body, source)
    except DecodeError:
        assert fast is None, "the C decoder read a request protobuf rejects"
        return False
    if rows.bad:
        assert fast is None, f"the C decoder read a request with a bad record: {rows.problems}"
        return False
    if fast is None:
        return False
    ExportTraceServiceRequest.FromString(body)  # read here: protobuf parses it whole (the file loader's test)
    spans, may_hold = fast
    expected = table(rows.spans, schema.SPANS)
    assert spans.schema.equals(expected.schema)
    for name in expected.column_names:
        assert spans.column(name).to_pylist() == expected.column(name).to_pylist(), name
    # redacted as the receiver redacts either: every text column, or the ones the C decoder says may hold one
    assert (redact.redact_arrow(spans, may_hold).to_pylist()
            == redact.redact_arrow(expected, schema.SPAN_TEXT_COLUMNS).to_pylist())
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(plain=True), st.one_of(st.none(), st.just("file.pb@0")))
def test_plain_requests_are_read_by_the_c_decoder_as_python_reads_them(req, source):
    body = req.SerializeToString()
    assert _check(body, source), "the C decoder refused a plain request"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_any_request_is_read_alike_or_left_to_python(req):
    _check(req.SerializeToString())


def _field(number: int, wire: int, payload: bytes) -> bytes:
    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(out)
    tag = varint(number << 3 | wire)
    return tag + (varint(len(payload)) + payload if wire == 2 else payload)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(plain=True), st.data())
def test_cut_flipped_and_extended_bytes_are_read_alike_or_left_to_python(req, data):
    body = bytearray(req.SerializeToString())
    how = data.draw(st.sampled_from(["cut", "flip", "append"]))
    if how == "cut" and body:
        body = body[: data.draw(st.integers(0, len(body) - 1))]
    elif how == "flip" and body:
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] ^= 1 << data.draw(st.integers(0, 7))
    else:  # an unknown field, a group, a second copy of a field, at the request's level
        body += data.draw(st.sampled_from([_field(9, 0, b"\x01"), _field(2, 2, b"x"), b"\x0b\x0c",
                                           _field(1, 2, b"\x0a\x00"), _field(1, 5, b"\0\0\0\0")]))
    _check(bytes(body))


def _one_span(**fields) -> bytes:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    for name, value in fields.items():
        if name == "attributes":
            span.attributes.extend(value)
        else:
            setattr(span, name, value)
    return req.SerializeToString()


@pytest.mark.parametrize("body", [
    _one_span(attributes=[KeyValue(key="a"), KeyValue(key="a")]),  # a duplicate key: Python keeps its last value
    _one_span(name="x") + _field(1, 2, _field(2, 2, _field(2, 2, _field(5, 2, b"y")))),  # a name given twice
    _one_span(attributes=[KeyValue(key="d", value=AnyValue(double_value=0.1))]).replace(
        b"\x21" + struct.pack("<d", 0.1), b"\x21" + struct.pack("<d", 0.1) + b"\x0a\x01z"),  # a value of two fields
])
def test_what_python_might_read_otherwise_is_left_to_python(body):
    assert from_protobuf.spans_table(body, None) is None
    _check(body)


def test_a_credential_is_found_wherever_it_is(tmp_path):
    body = _one_span(name=f"call with Bearer {TOKEN}", attributes=[KeyValue(key="k", value=AnyValue(
        array_value=ArrayValue(values=[AnyValue(string_value=f"x eyJ{TOKEN[3:]} y")])))])
    spans, may_hold = from_protobuf.spans_table(body, None)
    assert set(may_hold) == {"name", "attributes"}
    stored = redact.redact_arrow(spans, may_hold).to_pylist()[0]
    assert TOKEN not in stored["name"] and TOKEN[3:] not in stored["attributes"]
    assert redact.REDACTED in stored["name"] and redact.REDACTED in stored["attributes"]


def test_a_protobuf_file_stores_its_spans_once_and_redacted(tmp_path):
    # the loader stores the C decoder's rows with their facts at once, redacting them on the way: a credential in
    # any text column never reaches the database, and no copy of the rows is left behind in span_rows
    import duckdb

    from jitrace.analyzer.load import load_into

    body = _one_span(name=f"call with Bearer {TOKEN}", attributes=[
        KeyValue(key="rpc.grpc.status_code", value=AnyValue(int_value=16)),
        KeyValue(key="k", value=AnyValue(string_value=f"x eyJ{TOKEN[3:]} y"))])
    path = tmp_path / "spans.binpb"
    path.write_bytes(struct.pack(">I", len(body)) + body)
    con = duckdb.connect()
    assert load_into(con, [str(path)]).spans == 1
    name, attributes, denied = con.execute("SELECT name, attributes, denied FROM spans").fetchone()
    assert TOKEN not in name and TOKEN[3:] not in attributes and redact.REDACTED in name
    assert denied  # the facts were computed from the stored (redacted) attributes
    every_text = con.execute("SELECT string_agg(COLUMNS(*)::VARCHAR, '') FROM span_fact_rows").fetchone()
    assert not any(TOKEN[3:] in (value or "") for value in every_text)
    assert con.execute("SELECT count(*) FROM span_rows").fetchone() == (0,)
