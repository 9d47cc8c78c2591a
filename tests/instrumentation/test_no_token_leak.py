"""The raw token never leaves the process: every byte of a real OTLP export (and every line the apps print) is
searched for each token and each of its three segments."""

from __future__ import annotations

import time

import grpc
import grpc.aio
import helpers
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import bearer, call_aio, call_sync, mint, run, run_plain_pair
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from jitrace.instrumentation import bearer_credentials, refreshing_credentials


def _needles(tokens: list[str]) -> list[bytes]:
    found = []
    for token in tokens:
        found.append(token.encode())
        found.extend(part.encode() for part in token.split(".") if part)
    return found


def _assert_no_token(haystacks: list[bytes], tokens: list[str]) -> None:
    assert haystacks, "nothing was exported"
    for needle in _needles(tokens):
        for hay in haystacks:
            assert needle not in hay, "a token (or a part of it) was exported"


def _tokens() -> dict[str, str]:
    now = int(time.time())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "allowed": mint(jti=None),  # no jti: the id is a hash of the token, which must not be the token either
        "expired": mint(iat=now - 900, exp=now - 60),
        "forbidden": mint(perms=[]),
        "bad_signature": jwt.encode({"sub": "mallory", "iss": "jit-issuer", "aud": "jit-test", "exp": now + 60},
                                    other_key, algorithm="RS256"),
    }


@pytest.mark.slow
def test_no_token_in_the_otlp_export_of_plain_apps(tmp_path):
    tokens = _tokens()
    receiver, rows, output = run_plain_pair(tmp_path, tokens)
    assert len(rows) == 16
    assert len([s for s in receiver.spans() if s["name"].startswith("/jit.test.Echo/")]) == 32
    _assert_no_token(receiver.raw, list(tokens.values()))
    _assert_no_token([output.encode()], list(tokens.values()))


class _OnlyTestCalls(SpanProcessor):
    """Exports the test service's spans (not the receiver's own Export calls, which would feed back)."""

    def __init__(self, exporter: OTLPSpanExporter) -> None:
        self.exporter = exporter

    def on_end(self, span: ReadableSpan) -> None:
        if span.name.startswith("/jit.test.Echo/"):
            self.exporter.export([span])

    def shutdown(self) -> None:
        self.exporter.shutdown()


def test_no_token_in_the_otlp_export_of_credentials_and_metadata(otel, channel, secure_channel,
                                                                  service_ports):
    tokens = _tokens()
    receiver = helpers.OtlpReceiver()
    processor = _OnlyTestCalls(OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.port}", insecure=True))
    trace.get_tracer_provider().add_span_processor(processor)
    try:
        for token in tokens.values():
            for shape in ("unary", "bidi"):
                call_sync(channel, shape, metadata=bearer(token))
                call_sync(secure_channel, shape, credentials=bearer_credentials(token))
                call_sync(secure_channel, shape, credentials=refreshing_credentials(lambda t=token: t))

        async def aio_calls():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service_ports[0]}") as ch:
                for token in tokens.values():
                    await call_aio(ch, "server_stream", metadata=bearer(token))

        run(aio_calls())
    finally:
        processor.exporter = _Dropped()  # the provider keeps its processors: make this one inert
        receiver.stop()
    assert len(receiver.raw) >= 4 * 2 * 3 * 2  # client and server spans of every call
    _assert_no_token(receiver.raw, list(tokens.values()))


class _Dropped:
    def export(self, spans: object) -> None:
        return None

    def shutdown(self) -> None:
        return None
