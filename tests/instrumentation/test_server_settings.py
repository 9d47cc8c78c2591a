"""JITRACE_* settings on the server side, and jit.auth.wait_s covering time spent before the check."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from _server_fixtures import UNARY, Checker, call_metadata, server_span, sync_call, sync_handlers

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
def slow_server(otel: Any, jitrace_hooks: None, checker: Checker) -> Iterator[str]:
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, handlers=[sync_handlers(checker)],
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
