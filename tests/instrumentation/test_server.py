"""The server side end to end: real grpc / grpc.aio servers with OpenTelemetry's interceptor and jitrace's, real tokens.

Every call shape, allowed and denied for each reason the test service has, on sync and aio: the jit.* facts land on
OpenTelemetry's server span, and the client gets the ``jit-clock`` echo merged with the handler's trailing metadata.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import Outcome, aio_call, call_metadata, server_span, sync_call
from opentelemetry import trace
from plain_service import SHAPES, STREAM_STREAM, STREAM_UNARY, UNARY, UNARY_STREAM

from jitrace.instrumentation import contract as c

Call = Callable[..., Outcome]


@pytest.fixture(params=["sync", "aio"])
def serve(request: pytest.FixtureRequest) -> Call:
    """``serve(shape, metadata, payloads)``: one call to the test service on a sync or an aio server."""
    if request.param == "sync":
        target = request.getfixturevalue("sync_server")
        return lambda shape, metadata=(), payloads=None, traced=False: sync_call(target, shape, metadata, payloads,
                                                                                 traced=traced)
    start = request.getfixturevalue("aio_server")

    def run(shape: str, metadata: tuple = (), payloads: list[bytes] | None = None, traced: bool = False) -> Outcome:
        async def go() -> Outcome:
            async with start() as target:
                return await aio_call(target, shape, metadata, payloads, traced=traced)

        return asyncio.run(go())

    return run


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _payloads(shape: str, permission: bytes, denied: bool = False) -> list[bytes]:
    """The request messages. A denied client stream gets one message: grpc.aio's client, writing more after the
    server closed the call, sometimes reports INTERNAL ("Internal error from Core"), with or without jitrace."""
    return [permission] if shape in (UNARY, UNARY_STREAM) or denied else [permission, b"more"]


# name -> (token maker, permission asked, expected status, verdict, ErrorInfo reason)
UNAUTH, DENIED, OK = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.OK
SCENARIOS: dict[str, tuple[Callable[[Any, Any, int], str | None], bytes, grpc.StatusCode, str, str | None]] = {
    "valid": (lambda mint, other, now: mint(), b"orders:read", OK, c.VERDICT_VALID, None),
    "missing": (lambda mint, other, now: None, b"orders:read", UNAUTH, c.VERDICT_MISSING, "TOKEN_MISSING"),
    "expired": (lambda mint, other, now: mint(iat=now - 600, nbf=now - 600, exp=now - 300), b"orders:read", UNAUTH,
                c.VERDICT_EXPIRED, "TOKEN_EXPIRED"),
    "not_yet_valid": (lambda mint, other, now: mint(nbf=now + 300), b"orders:read", UNAUTH, c.VERDICT_NOT_YET_VALID,
                      "TOKEN_NOT_YET_VALID"),
    "bad_signature": (lambda mint, other, now: mint(key=other), b"orders:read", UNAUTH, c.VERDICT_BAD_SIGNATURE,
                      "TOKEN_INVALID"),
    "bad_audience": (lambda mint, other, now: mint(aud="billing"), b"orders:read", UNAUTH, c.VERDICT_BAD_AUDIENCE,
                     "TOKEN_INVALID"),
    "bad_issuer": (lambda mint, other, now: mint(iss="someone-else"), b"orders:read", UNAUTH, c.VERDICT_BAD_ISSUER,
                   "TOKEN_INVALID"),
    "malformed": (lambda mint, other, now: "not.a-jwt", b"orders:read", UNAUTH, c.VERDICT_MALFORMED, "TOKEN_INVALID"),
    "permission_missing": (lambda mint, other, now: mint(), b"orders:write", DENIED, c.VERDICT_VALID,
                           "PERMISSION_MISSING"),
    "grant_ended": (lambda mint, other, now: mint(grant_start=now - 3600, grant_end=now - 60), b"orders:read", DENIED,
                    c.VERDICT_VALID, "GRANT_NOT_ACTIVE"),
}


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_facts_on_the_server_span(serve: Call, exporter: Any, mint: Any, other_key: Any, shape: str,
                                  scenario: str) -> None:
    make, permission, code, verdict, reason = SCENARIOS[scenario]
    now = int(time.time())
    token = make(mint, other_key, now)
    sent_ns = time.time_ns()
    outcome = serve(shape, call_metadata(token, sent_ns=sent_ns), _payloads(shape, permission, code != OK))
    assert outcome.code == code

    span = server_span(exporter)
    a = span.attributes
    assert a[c.RPC_GRPC_STATUS_CODE] == code.value[0]  # also after abort_with_status, which OTel alone misses
    assert a[c.TOKEN_VERDICT] == verdict
    assert a[c.TOKEN_PRESENT] is (token is not None)
    assert a.get(c.DENIAL_REASON) == reason
    # clock stamps: the client's, and the server's arrival (the OTel span's start)
    assert a[c.CLOCK_PEER_SENT_NS] == sent_ns
    assert a[c.CLOCK_RECEIVED_NS] == span.start_time
    t2, t3 = (int(x) for x in outcome.trailing[c.METADATA_CLOCK].split(","))
    assert t2 == span.start_time and t2 <= t3 <= span.end_time
    # the handler's own trailing metadata survives the echo
    if code == OK:
        assert outcome.trailing["x-handler"] == "yes"
    else:
        assert "grpc-status-details-bin" in outcome.trailing
    duration_s = (span.end_time - span.start_time) / 1e9
    if verdict == c.VERDICT_MISSING:
        assert c.AUTH_WAIT_S not in a and c.TOKEN_ID not in a  # no check ran, no token to describe
        return
    assert 0 <= a[c.AUTH_WAIT_S] <= duration_s
    claims = jwt.decode(token, options={"verify_signature": False}) if verdict != c.VERDICT_MALFORMED else {}
    if not claims:
        assert len(a[c.TOKEN_ID]) == 16 and a[c.TOKEN_ID] not in token
        return
    assert a[c.TOKEN_ID] == claims["jti"]
    assert a[c.TOKEN_SUB] == "alice" and a[c.TOKEN_ISS] == claims["iss"] and a[c.TOKEN_AUD] == claims["aud"]
    assert a[c.TOKEN_EXP] == claims["exp"] and a[c.TOKEN_IAT] == claims["iat"] and a[c.TOKEN_NBF] == claims["nbf"]
    # ttl and age at the check, which happened inside the span
    assert claims["exp"] - span.end_time / 1e9 <= a[c.TOKEN_TTL_S] <= claims["exp"] - span.start_time / 1e9
    assert span.start_time / 1e9 - claims["iat"] <= a[c.TOKEN_AGE_S] <= span.end_time / 1e9 - claims["iat"]
    assert a[c.GRANT_ID] == "grant-1"
    assert (a[c.GRANT_START], a[c.GRANT_END]) == (claims["grant_start"], claims["grant_end"])
    if reason in (None, "PERMISSION_MISSING"):
        assert a[c.POLICY_DECISION] == (c.DECISION_ALLOW if code == OK else c.DECISION_DENY)
        assert a[c.POLICY_REQUIRED] == permission.decode()
        assert list(a[c.POLICY_GRANTED]) == ["orders:read"]
        assert (a[c.POLICY_ENGINE], a[c.POLICY_ID], a[c.POLICY_VERSION]) == ("test", "test-policy", "v1")
    else:
        assert c.POLICY_DECISION not in a


@pytest.mark.parametrize("style", ["status", "abort", "set_code"])
@pytest.mark.parametrize("shape", [UNARY, STREAM_STREAM])
def test_every_way_of_denying_is_seen(serve: Call, exporter: Any, mint: Any, style: str, shape: str) -> None:
    """abort_with_status, abort after setting trailing metadata, or set_code and return: same facts, echo kept."""
    outcome = serve(shape, call_metadata(mint(), sent_ns=time.time_ns(), style=style),
                    _payloads(shape, b"orders:delete", denied=True))
    assert outcome.code == DENIED
    assert "grpc-status-details-bin" in outcome.trailing and c.METADATA_CLOCK in outcome.trailing
    a = server_span(exporter).attributes
    assert a[c.DENIAL_REASON] == "PERMISSION_MISSING"
    assert a[c.RPC_GRPC_STATUS_CODE] == DENIED.value[0]
    assert a[c.POLICY_DECISION] == c.DECISION_DENY


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_no_echo_unless_the_client_stamped(serve: Call, exporter: Any, mint: Any, shape: str) -> None:
    outcome = serve(shape, call_metadata(mint()), _payloads(shape, b"orders:read"))
    assert outcome.code == OK and c.METADATA_CLOCK not in outcome.trailing
    a = server_span(exporter).attributes
    assert c.CLOCK_PEER_SENT_NS not in a and a[c.CLOCK_RECEIVED_NS] > 0


@pytest.mark.parametrize("shape", [STREAM_UNARY, STREAM_STREAM])
def test_later_checks_in_a_stream_are_events(serve: Call, exporter: Any, mint: Any, shape: str) -> None:
    """The first check sets the attributes; each re-verification later in the stream adds a jit.token.check event."""
    now = int(time.time())
    first, fresh = mint(jti="first"), mint(jti="fresh")
    stale = mint(jti="stale", iat=now - 600, nbf=now - 600, exp=now - 10)
    payloads = [b"orders:read", b"token:" + fresh.encode(), b"token:" + stale.encode()]
    outcome = serve(shape, call_metadata(first, sent_ns=time.time_ns()), payloads)
    assert outcome.code == UNAUTH  # the stale token ends the stream

    span = server_span(exporter)
    a = span.attributes
    assert a[c.TOKEN_VERDICT] == c.VERDICT_VALID and a[c.TOKEN_ID] == "first"  # not overwritten
    assert a[c.DENIAL_REASON] == "TOKEN_EXPIRED"
    checks = [e for e in span.events if e.name == c.TOKEN_CHECK_EVENT]
    assert [(e.attributes[c.TOKEN_ID], e.attributes[c.TOKEN_VERDICT]) for e in checks] == [
        ("fresh", c.VERDICT_VALID), ("stale", c.VERDICT_EXPIRED)]
    assert checks[0].attributes[c.TOKEN_TTL_S] > 0 > checks[1].attributes[c.TOKEN_TTL_S]


def test_the_span_is_opentelemetrys(serve: Call, exporter: Any, mint: Any) -> None:
    """jitrace adds to OTel's server span (one span per call, the standard rpc.* attributes), in the client's trace."""
    outcome = serve(UNARY, call_metadata(mint()), [b"orders:read"], traced=True)
    assert outcome.code == OK
    span = server_span(exporter)
    assert span.kind == trace.SpanKind.SERVER
    a = span.attributes
    assert (a[c.RPC_SYSTEM], a[c.RPC_SERVICE], a[c.RPC_METHOD]) == ("grpc", "jit.test.Echo", "Unary")
    clients = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
    assert len(clients) == 1 and span.context.trace_id == clients[0].context.trace_id


@pytest.mark.parametrize("scenario", ["valid", "missing", "expired", "permission_missing", "malformed"])
def test_jitraces_facts_are_written_once_per_call(serve: Call, exporter: Any, mint: Any, other_key: Any,
                                                  monkeypatch: pytest.MonkeyPatch, scenario: str) -> None:
    """Arrival facts, the first check's and the denial reason go on the span together, when the reply leaves: one
    call into the SDK for jitrace's own facts. A policy decision the service records (the test service does, once
    the token is valid) writes what jitrace kept before it, and the reason follows on its own."""
    from jitrace.instrumentation import _span_attrs

    writes: list[dict] = []
    original, original_clean = _span_attrs.set_attributes, _span_attrs.set_clean
    monkeypatch.setattr(_span_attrs, "set_attributes",
                        lambda span, attrs, **kw: writes.append(dict(attrs)) or original(span, attrs, **kw))
    monkeypatch.setattr(_span_attrs, "set_clean",  # the per-call paths' form (it calls the above only as a fallback)
                        lambda span, attrs, base: writes.append(dict(attrs)) or original_clean(span, attrs, base))
    make, permission, code, verdict, reason = SCENARIOS[scenario]
    sent_ns = time.time_ns()
    outcome = serve(UNARY, call_metadata(make(mint, other_key, int(time.time())), sent_ns=sent_ns), [permission])
    assert outcome.code == code
    decided = verdict == c.VERDICT_VALID
    assert len(writes) == (2 if decided and reason else 1)
    written = {k: v for w in writes for k, v in w.items()}
    assert written[c.TOKEN_VERDICT] == verdict and written.get(c.DENIAL_REASON) == reason
    assert written[c.CLOCK_PEER_SENT_NS] == sent_ns and c.CLOCK_RECEIVED_NS in written
    a = server_span(exporter).attributes
    assert {k: a[k] for k in written} == written
