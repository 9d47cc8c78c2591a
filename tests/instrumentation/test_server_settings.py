"""JITRACE_* settings on the server side, and jit.auth.wait_s covering time spent before the check."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from helpers import Outcome, call_metadata, raw_aio_channel, server_span, sync_call
from plain_service import UNARY, Verifier, sync_handler

from jitrace.instrumentation import _server, _settings
from jitrace.instrumentation import contract as c
from jitrace.instrumentation._settings import Settings


def test_disabled_means_no_facts_and_no_echo(sync_server: str, exporter: Any, mint: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_settings, "_current", Settings(enabled=False))
    outcome = sync_call(sync_server, UNARY, call_metadata(mint(), sent_ns=time.time_ns()))
    assert outcome.code == grpc.StatusCode.OK and c.METADATA_CLOCK not in outcome.trailing
    assert not [k for k in server_span(exporter).attributes if k.startswith("jit.")]


def test_no_echo_when_clock_stamps_are_off(sync_server: str, exporter: Any, mint: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_settings, "_current", Settings(clock_stamps=False))
    outcome = sync_call(sync_server, UNARY, call_metadata(mint(), sent_ns=time.time_ns()))
    assert outcome.code == grpc.StatusCode.OK and c.METADATA_CLOCK not in outcome.trailing
    assert server_span(exporter).attributes[c.TOKEN_VERDICT] == c.VERDICT_VALID


def test_token_metadata_key_and_subject_hashing(sync_server: str, exporter: Any, mint: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With JITRACE_TOKEN_METADATA_KEY=x-jit-token the token is read there (this service still wants authorization,
    so it denies TOKEN_MISSING: jitrace reports what was on the call, not what the service looked for)."""
    monkeypatch.setattr(_settings, "_current", Settings.from_env({"JITRACE_TOKEN_METADATA_KEY": "X-Jit-Token",
                                                                  "JITRACE_HASH_SUBJECT": "1"}))
    token = mint(jti="by-custom-key")
    outcome = sync_call(sync_server, UNARY, (("x-jit-token", token),))
    assert outcome.code == grpc.StatusCode.UNAUTHENTICATED
    a = server_span(exporter).attributes
    assert a[c.TOKEN_PRESENT] is True and a[c.TOKEN_ID] == "by-custom-key"
    assert a[c.TOKEN_SUB] != "alice" and len(a[c.TOKEN_SUB]) == 16
    assert c.TOKEN_VERDICT not in a and a[c.DENIAL_REASON] == "TOKEN_MISSING"


class SlowMiddleware(grpc.ServerInterceptor):
    """A user's interceptor that holds each call before the handler runs (queueing, a slow lookup)."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)

        def slow(request: Any, context: Any) -> Any:
            time.sleep(self.hold_s)
            return handler.unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(slow)


@pytest.fixture
def slow_server(otel: Any, jitrace_hooks: None, verifier: Verifier) -> Iterator[str]:
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, handlers=[sync_handler(verifier)],
                         interceptors=[_server.server_interceptor(), SlowMiddleware(0.2)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None).wait(5)
    pool.shutdown(wait=False)


def test_wait_covers_middleware_before_the_check(slow_server: str, exporter: Any, mint: Any) -> None:
    """jit.auth.wait_s runs from the OTel span's start to the first jwt.decode, so it includes the middleware hold."""
    outcome = sync_call(slow_server, UNARY, call_metadata(mint()))
    assert outcome.code == grpc.StatusCode.OK
    span = server_span(exporter)
    assert 0.2 <= span.attributes[c.AUTH_WAIT_S] <= (span.end_time - span.start_time) / 1e9


def test_sync_handlers_on_an_aio_server_stay_on_the_thread_pool(otel: Any) -> None:
    """grpc.aio runs a sync handler on its thread pool: jitrace keeps it sync, and sets the call state there.
    (The server is made without OpenTelemetry's interceptor, whose aio wrapper awaits every handler.)"""
    from grpc.aio._server import server as raw_aio_server

    from jitrace.instrumentation import _aio_server, _call_state

    seen: list[tuple[bool, str]] = []

    def unary(request: bytes, context: Any) -> bytes:
        seen.append((_call_state.current() is not None, threading.current_thread().name))
        return b"sync:" + request

    def unary_stream(request: bytes, context: Any) -> Iterator[bytes]:
        seen.append((_call_state.current() is not None, threading.current_thread().name))
        yield from (b"a", b"b")

    def deny(request: bytes, context: Any) -> bytes:
        context.set_trailing_metadata((("x-handler", "yes"),))
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")

    handlers = grpc.method_handlers_generic_handler("jit.test.Sync", {
        "U": grpc.unary_unary_rpc_method_handler(unary), "S": grpc.unary_stream_rpc_method_handler(unary_stream),
        "D": grpc.unary_unary_rpc_method_handler(deny)})

    async def go() -> tuple[Outcome, Outcome, Outcome]:
        server = raw_aio_server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handlers],
                                interceptors=[_aio_server.aio_server_interceptor()])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with raw_aio_channel(f"127.0.0.1:{port}") as channel:
                md = call_metadata(None, sent_ns=time.time_ns())
                unary_call = channel.unary_unary("/jit.test.Sync/U")(b"x", metadata=md, timeout=10)
                first = Outcome(await unary_call.code(), [await unary_call],
                                dict(await unary_call.trailing_metadata()))
                stream_call = channel.unary_stream("/jit.test.Sync/S")(b"x", metadata=md, timeout=10)
                replies = [r async for r in stream_call]
                second = Outcome(await stream_call.code(), replies, dict(await stream_call.trailing_metadata()))
                deny_call = channel.unary_unary("/jit.test.Sync/D")(b"x", metadata=md, timeout=10)
                with contextlib.suppress(grpc.RpcError):
                    await deny_call
                third = Outcome(await deny_call.code(), [], dict(await deny_call.trailing_metadata()))
                return first, second, third
        finally:
            await server.stop(None)

    first, second, third = asyncio.run(go())
    assert third.code == grpc.StatusCode.PERMISSION_DENIED
    assert third.trailing["x-handler"] == "yes" and c.METADATA_CLOCK in third.trailing
    assert first.replies == [b"sync:x"] and second.replies == [b"a", b"b"]
    assert c.METADATA_CLOCK in first.trailing and c.METADATA_CLOCK in second.trailing
    assert [state for state, _ in seen] == [True, True]
    assert all(name != threading.main_thread().name for _, name in seen)  # not on the event loop's thread


@pytest.mark.parametrize("value, enabled", [("true", False), ("TRUE", False), (" True ", False), ("false", True),
                                            ("", True), ("1", True)])
def test_otel_sdk_disabled_true_switches_jitrace_off(value: str, enabled: bool) -> None:
    """OpenTelemetry's own switch: with the SDK off there is no span to record on, so jitrace installs no hook
    (only the value true counts, as the OpenTelemetry specification says)."""
    assert Settings.from_env({"OTEL_SDK_DISABLED": value}).enabled is enabled
    assert Settings.from_env({"OTEL_SDK_DISABLED": value, "JITRACE_ENABLED": "false"}).enabled is False
