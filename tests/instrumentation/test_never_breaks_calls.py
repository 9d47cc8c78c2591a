"""Whatever a token or a reply looks like, and even when jitrace itself fails, a call ends as it would without
jitrace, and jitrace's own failure is counted.

The baseline is the same call through a channel and server made while jitrace was switched off (OpenTelemetry still
on): only jitrace differs between the two.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import grpc
import grpc.aio
import helpers
import plain_service as svc
import pytest
from helpers import bearer, call_aio, call_sync, mint, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitrace.instrumentation import _aio_client, _client, _hooks, _safety, _token


@pytest.fixture(scope="module")
def plain_target(otel) -> Iterator[str]:
    """A server made with jitrace off (OpenTelemetry on)."""
    saved = dict(_hooks._active)
    _hooks._active.update(client=False, server=False)
    try:
        server, port, _ = svc.serve_sync(svc.Verifier(helpers.public_pem()))
    finally:
        _hooks._active.update(saved)
    yield f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture(scope="module")
def channels(plain_target, service_ports) -> Iterator[tuple[grpc.Channel, grpc.Channel]]:
    """(plain channel to the plain server, jitrace channel to the jitrace server)."""
    saved = dict(_hooks._active)
    _hooks._active.update(client=False)
    try:
        plain = grpc.insecure_channel(plain_target)
    finally:
        _hooks._active.update(saved)
    instrumented = grpc.insecure_channel(f"127.0.0.1:{service_ports[0]}")
    # OpenTelemetry's interceptor outside, jitrace's next to the raw channel
    assert layers_of(plain) == ["OpenTelemetryClientInterceptor"]
    assert layers_of(instrumented) == ["OpenTelemetryClientInterceptor", "JitraceChannel"]
    yield plain, instrumented
    plain.close()
    instrumented.close()


def layers_of(channel: grpc.Channel) -> list[str]:
    """What is wrapped around a sync channel, outermost first: interceptors, or jitrace's channel wrapper."""
    found = []
    while hasattr(channel, "_channel") and type(channel).__module__ != "grpc._channel":
        found.append(type(getattr(channel, "_interceptor", channel)).__name__)
        channel = channel._channel
    return found


def outcome(channel: grpc.Channel, shape: str, **kw) -> tuple:
    try:
        return call_sync(channel, shape, **kw)
    except Exception as exc:  # noqa: BLE001 - grpc's own refusal of a metadata value is an outcome too
        return ("raised", type(exc).__name__)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt_shaped(payload: bytes) -> str:
    return ".".join([_b64(b'{"alg":"RS256"}'), _b64(payload), _b64(b"sig")])


hostile_claims = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
claim_names = st.sampled_from(["sub", "iss", "aud", "iat", "nbf", "exp", "jti", "grant_id", "grant_start",
                               "grant_end", "perms"])

hostile_tokens = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300),
    st.dictionaries(claim_names, hostile_claims, max_size=8).map(
        lambda d: _jwt_shaped(json.dumps(d, allow_nan=True).encode())),
    st.binary(max_size=200).map(_jwt_shaped),
    st.integers(1, 600).map(lambda depth: _jwt_shaped(b"[" * depth + b"]" * depth)),
    st.integers(1, 400).map(lambda n: ".".join(["a"] * n)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=hostile_tokens, shape=st.sampled_from(list(svc.SHAPES)))
def test_hostile_tokens_do_not_change_the_outcome(channels, token, shape):
    plain, instrumented = channels
    md = bearer(token)
    assert outcome(instrumented, shape, metadata=md) == outcome(plain, shape, metadata=md)


# (claim padding, JITRACE_MAX_TOKEN_BYTES): a token over jitrace's limit that gRPC still carries, and one far over
# gRPC's hard metadata limit. (Between gRPC's soft and hard limits, 8-16 KiB, gRPC refuses calls at random.)
@pytest.mark.parametrize(("pad", "limit"), [(3_000, 2_000), (40_000, 8_192)])
def test_huge_token_is_refused_by_jitrace_and_counted(channels, monkeypatch, pad, limit):
    from jitrace.instrumentation import _settings

    monkeypatch.setattr(_settings, "_current", _settings.Settings(max_token_bytes=limit))
    plain, instrumented = channels
    token = mint(pad="x" * pad)
    before = _safety.failure_counts().get("token_too_large", 0)
    got = outcome(instrumented, "unary", metadata=bearer(token))
    assert got == outcome(plain, "unary", metadata=bearer(token))
    assert got[0] is (grpc.StatusCode.OK if pad < 8_000 else grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert _safety.failure_counts().get("token_too_large", 0) > before


@pytest.mark.parametrize("request_body", [b"ok", b"deny"])
def test_hostile_trailers_from_the_server(channels, request_body):
    """A server answering with an unreadable jit-clock and status details."""
    plain, instrumented = channels

    def call(ch):
        try:
            return ("ok", ch.unary_unary(svc.HOSTILE)(request_body, metadata=bearer(mint()), timeout=10))
        except grpc.RpcError as err:
            return (err.code(), err.details())

    before = _safety.failure_counts().get("unread_status_details", 0)
    assert call(instrumented) == call(plain)
    if request_body == b"deny":  # the hostile status details were met, read as nothing, and counted
        assert _safety.failure_counts().get("unread_status_details", 0) == before + 1


@pytest.mark.parametrize("target", ["begin", "finish"])
@pytest.mark.parametrize("shape", list(svc.SHAPES))
def test_an_exception_inside_jitrace_is_swallowed_and_counted(channels, monkeypatch, target, shape):
    plain, instrumented = channels

    def boom(*args, **kwargs):
        raise RuntimeError("jitrace bug")

    for denied in (False, True):
        md = bearer(mint(perms=[] if denied else ["orders:read"]))
        expected = outcome(plain, shape, metadata=md)
        if target == "begin":
            monkeypatch.setattr(_token, "token_attributes", boom)
        else:
            monkeypatch.setattr(_client, "finish", boom)
        before = _safety.failure_counts().get("client_interceptor", 0)
        assert outcome(instrumented, shape, metadata=md) == expected
        assert _safety.failure_counts().get("client_interceptor", 0) > before
        monkeypatch.undo()


@pytest.mark.parametrize("target", ["begin", "finish"])
@pytest.mark.parametrize("shape", list(svc.SHAPES))
def test_an_exception_inside_jitrace_aio(service_ports, plain_target, monkeypatch, target, shape):
    def boom(*args, **kwargs):
        raise RuntimeError("jitrace bug")

    async def both(md):
        saved = dict(_hooks._active)
        _hooks._active.update(client=False)
        try:
            plain = grpc.aio.insecure_channel(plain_target)
        finally:
            _hooks._active.update(saved)
        async with plain, grpc.aio.insecure_channel(f"127.0.0.1:{service_ports[0]}") as instrumented:
            expected = await call_aio(plain, shape, metadata=md)
            if target == "begin":
                monkeypatch.setattr(_token, "token_attributes", boom)
            else:
                monkeypatch.setattr(_aio_client, "finish", boom)
            try:
                got = await call_aio(instrumented, shape, metadata=md)
            finally:
                monkeypatch.undo()
            return expected, got

    for denied in (False, True):
        before = _safety.failure_counts().get("aio_client_interceptor", 0)
        expected, got = run(both(bearer(mint(perms=[] if denied else ["orders:read"]))))
        assert got == expected
        assert _safety.failure_counts().get("aio_client_interceptor", 0) > before


def test_a_garbage_token_from_credentials(service_ports):
    creds_channel = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    from jitrace.instrumentation import refreshing_credentials

    def plain_plugin(context, callback):
        callback((("authorization", "Bearer not-a-jwt"),), None)

    with grpc.secure_channel(f"127.0.0.1:{service_ports[1]}", creds_channel) as ch:
        expected = outcome(ch, "unary", credentials=grpc.metadata_call_credentials(plain_plugin))
        got = outcome(ch, "unary", credentials=refreshing_credentials(lambda: "not-a-jwt"))
    assert got == expected and got[0] is grpc.StatusCode.UNAUTHENTICATED
