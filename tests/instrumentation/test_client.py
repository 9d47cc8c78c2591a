"""Client facts on OpenTelemetry's client span, sync grpc, all four shapes, allowed and denied, over a real server."""

from __future__ import annotations

import time

import grpc
import plain_service as svc
import pytest
from helpers import bearer, call_sync, client_span, jit_attrs, mint, root_span, traced

from jitrace.instrumentation import contract as c

SHAPES = list(svc.SHAPES)


@pytest.mark.parametrize("shape", SHAPES)
def test_allowed_call_carries_token_facts_and_clock_stamp(shape, channel, exporter):
    now = int(time.time())
    token = mint(sub="alice", jti=f"tok-{shape}", iat=now - 20, exp=now + 280, grant_id="g-1",
                 grant_start=now - 60, grant_end=now + 600)
    before_ns = time.time_ns()
    (code, reply), trace_id = traced(lambda: call_sync(channel, shape, metadata=bearer(token)))
    after_ns = time.time_ns()
    assert code is grpc.StatusCode.OK and reply

    span = client_span(exporter, trace_id)
    attrs = span.attributes
    assert attrs[c.RPC_GRPC_STATUS_CODE] == 0
    assert attrs[c.TOKEN_PRESENT] is True
    assert attrs[c.TOKEN_ID] == f"tok-{shape}"
    assert (attrs[c.TOKEN_SUB], attrs[c.TOKEN_ISS], attrs[c.TOKEN_AUD]) == ("alice", svc.ISSUER, svc.AUDIENCE)
    assert (attrs[c.TOKEN_IAT], attrs[c.TOKEN_EXP]) == (now - 20, now + 280)
    assert 19 <= attrs[c.TOKEN_AGE_S] < 80 and 220 < attrs[c.TOKEN_TTL_S] <= 281
    assert (attrs[c.GRANT_ID], attrs[c.GRANT_START], attrs[c.GRANT_END]) == ("g-1", now - 60, now + 600)
    assert c.DENIAL_REASON not in attrs and c.TOKEN_REFRESHED not in attrs
    # the stamp left with the call, and is the one the server saw
    assert before_ns <= attrs[c.CLOCK_SENT_NS] <= after_ns
    assert svc.SEEN[f"tok-{shape}"][c.METADATA_SENT_NS] == str(attrs[c.CLOCK_SENT_NS])
    # the facts are on the client span, not on the caller's span around it (jitrace runs inside OpenTelemetry)
    assert jit_attrs(root_span(exporter, trace_id)) == {}


@pytest.mark.parametrize("shape", SHAPES)
def test_clock_offset_and_delay_from_the_servers_echo(shape, channel, exporter):
    (code, _), trace_id = traced(lambda: call_sync(channel, shape, metadata=bearer(mint())))
    assert code is grpc.StatusCode.OK
    attrs = client_span(exporter, trace_id).attributes
    # one host, one clock: the offset is within the round trip, the delay is not negative
    assert 0 <= attrs[c.CLOCK_DELAY_S] < 5
    assert abs(attrs[c.CLOCK_OFFSET_S]) <= attrs[c.CLOCK_DELAY_S] / 2 + 0.01


DENIALS = {
    "expired": (lambda: bearer(mint(iat=int(time.time()) - 600, exp=int(time.time()) - 30)),
                grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED"),
    "missing": (lambda: None, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
    "forbidden": (lambda: bearer(mint(perms=[])), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_MISSING"),
    "not_yet_valid": (lambda: bearer(mint(nbf=int(time.time()) + 120)), grpc.StatusCode.UNAUTHENTICATED,
                      "TOKEN_NOT_YET_VALID"),
}


@pytest.mark.parametrize("denial", list(DENIALS))
@pytest.mark.parametrize("shape", SHAPES)
def test_denied_call_carries_the_denial_reason(shape, denial, channel, exporter):
    make_metadata, expected_code, reason = DENIALS[denial]
    metadata = make_metadata()
    (code, _), trace_id = traced(lambda: call_sync(channel, shape, metadata=metadata))
    assert code is expected_code

    attrs = client_span(exporter, trace_id).attributes
    assert attrs[c.RPC_GRPC_STATUS_CODE] == expected_code.value[0]
    assert attrs[c.DENIAL_REASON] == reason
    assert attrs[c.TOKEN_PRESENT] is (denial != "missing")
    if denial == "expired":
        assert attrs[c.TOKEN_TTL_S] < 0  # expired by this clock at send
    assert c.CLOCK_SENT_NS in attrs


@pytest.mark.parametrize("shape", SHAPES)
def test_every_call_style_records_the_same_facts(shape, channel, exporter):
    for token, expected in ((mint(jti=f"style-{shape}"), None), (mint(perms=[]), "PERMISSION_MISSING")):
        styles = {"unary": ("call", "with_call", "future"), "client_stream": ("call", "future")}.get(shape, ("call",))
        for style in styles:
            (code, _), trace_id = traced(
                lambda t=token, s=style: call_sync(channel, shape, metadata=bearer(t), style=s))
            attrs = client_span(exporter, trace_id).attributes
            assert (code is grpc.StatusCode.OK) is (expected is None)
            assert attrs.get(c.DENIAL_REASON) == expected
            assert attrs[c.TOKEN_PRESENT] is True and c.CLOCK_SENT_NS in attrs
            assert c.CLOCK_OFFSET_S in attrs


def test_bare_token_and_configured_metadata_key(channel, exporter, monkeypatch):
    from jitrace.instrumentation import _settings

    token = mint(jti="bare-1")
    # a bare JWT (no "Bearer ") under the default key is read too
    (code, _), trace_id = traced(lambda: call_sync(channel, "unary", metadata=(("authorization", token),)))
    assert client_span(exporter, trace_id).attributes[c.TOKEN_ID] == "bare-1"
    # JITRACE_TOKEN_METADATA_KEY: a token under another key
    monkeypatch.setattr(_settings, "_current", _settings.Settings(token_metadata_key="x-jit-token"))
    (code, _), trace_id = traced(lambda: call_sync(channel, "unary", metadata=(("x-jit-token", mint(jti="k-2")),)))
    assert code is grpc.StatusCode.UNAUTHENTICATED  # the service itself only reads authorization
    assert client_span(exporter, trace_id).attributes[c.TOKEN_ID] == "k-2"


def test_clock_stamps_can_be_switched_off(channel, exporter, monkeypatch):
    from jitrace.instrumentation import _settings

    monkeypatch.setattr(_settings, "_current", _settings.Settings(clock_stamps=False))
    token = mint(jti="nostamp")
    (code, _), trace_id = traced(lambda: call_sync(channel, "unary", metadata=bearer(token)))
    attrs = client_span(exporter, trace_id).attributes
    assert code is grpc.StatusCode.OK
    assert c.CLOCK_SENT_NS not in attrs and c.CLOCK_OFFSET_S not in attrs
    assert c.METADATA_SENT_NS not in svc.SEEN["nostamp"]
    assert attrs[c.TOKEN_ID] == "nostamp"


def test_subject_hashed_by_configuration(channel, exporter, monkeypatch):
    from jitrace.instrumentation import _settings, _token

    monkeypatch.setattr(_settings, "_current", _settings.Settings(hash_subject=True))
    (_, _), trace_id = traced(lambda: call_sync(channel, "unary", metadata=bearer(mint(sub="bob@example.com"))))
    assert client_span(exporter, trace_id).attributes[c.TOKEN_SUB] == _token.hash_value("bob@example.com")


def test_a_call_opentelemetry_skips_leaves_the_callers_span_alone(channel, exporter):
    """OpenTelemetry makes no span for a call it skips (suppressed, filtered out): jitrace must not annotate the
    caller's own client span instead."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    tracer = trace.get_tracer("jitrace.tests")
    with tracer.start_as_current_span("my-client-op", kind=trace.SpanKind.CLIENT) as mine, suppress_instrumentation():
        code, _ = call_sync(channel, "unary", metadata=bearer(mint()))
    assert code is grpc.StatusCode.OK
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == mine.get_span_context().trace_id]
    assert [s.name for s in spans if s.kind is trace.SpanKind.CLIENT] == ["my-client-op"]
    assert jit_attrs(spans[-1]) == {}
