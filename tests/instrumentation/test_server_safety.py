"""The server side never changes a call's outcome: hostile metadata, and jitrace's own code failing, are counted only.

Outcomes are compared with the same call with jitrace switched off (its interceptor then passes the handler through).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import grpc
import pytest
from helpers import Outcome, aio_call, call_metadata, raw_channel, server_span, sync_call
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plain_service import STREAM_STREAM, UNARY, UNARY_STREAM

from jitrace.instrumentation import _safety, _server_call, _settings, _status_details, _token
from jitrace.instrumentation import contract as c

# printable ASCII: what grpc accepts in a text metadata value
METADATA_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


def baseline(call: Callable[[], Outcome]) -> Outcome:
    """The call's outcome with jitrace switched off (JITRACE_ENABLED=false: its interceptor passes the handler on
    untouched, as if it were not there). Works even if another test module instrumented grpc process-wide."""
    saved = _settings.get()
    _settings.configure(replace(saved, enabled=False))
    try:
        return call()
    finally:
        _settings.configure(saved)


def _same(a: Any, b: Any) -> None:
    """Same outcome: status, replies and trailing metadata apart from jitrace's echo."""
    assert (a.code, a.replies) == (b.code, b.replies)
    assert {k: v for k, v in a.trailing.items() if k != c.METADATA_CLOCK} == b.trailing


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=METADATA_TEXT, stamp=METADATA_TEXT, shape=st.sampled_from([UNARY, UNARY_STREAM]))
def test_hostile_metadata_changes_nothing(sync_server: str, exporter: Any, token: str, stamp: str,
                                          shape: str) -> None:
    md = (("authorization", token), ("jit-sent-ns", stamp))
    _same(sync_call(sync_server, shape, md), baseline(lambda: sync_call(sync_server, shape, md)))


@pytest.mark.parametrize("token", ["a.b.c", "x" * 6000, "e30.e30.e30", "eyJhbGciOiJub25lIn0.bnVsbA.", "Bearer"])
def test_odd_tokens_change_nothing(sync_server: str, exporter: Any, mint: Any, token: str) -> None:
    md = call_metadata(token, sent_ns=time.time_ns())
    expected = baseline(lambda: sync_call(sync_server, UNARY, md))
    server_span(exporter)
    exporter.clear()
    _same(sync_call(sync_server, UNARY, md), expected)
    assert server_span(exporter).attributes[c.TOKEN_VERDICT] == c.VERDICT_MALFORMED


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("forced failure inside jitrace")


@pytest.mark.parametrize("target", [
    (_token, "token_attributes"),  # token facts: at arrival and in the PyJWT hook
    (_server_call.ServerCall, "trailing"),  # the echo and the denial reason, when the reply leaves
    (_status_details, "denial_reason"),
    (_server_call.ServerCall, "begin"),
])
@pytest.mark.parametrize("permission", [b"orders:read", b"orders:write"])
@pytest.mark.parametrize("shape", [UNARY, STREAM_STREAM])
def test_a_failure_inside_jitrace_is_counted_not_raised(sync_server: str, exporter: Any,
                                                        mint: Any, monkeypatch: pytest.MonkeyPatch,
                                                        target: tuple, permission: bytes, shape: str) -> None:
    md = call_metadata(mint(), sent_ns=time.time_ns())
    expected = baseline(lambda: sync_call(sync_server, shape, md, [permission]))
    server_span(exporter)
    exporter.clear()
    before = sum(_safety.failure_counts().values())
    monkeypatch.setattr(*target, _boom)
    outcome = sync_call(sync_server, shape, md, [permission])
    _same(outcome, expected)
    server_span(exporter)
    assert sum(_safety.failure_counts().values()) > before


@pytest.mark.parametrize("style", ["status", "abort", "set_code"])
def test_aio_failure_inside_jitrace_is_counted_not_raised(aio_server: Any, exporter: Any, mint: Any,
                                                          monkeypatch: pytest.MonkeyPatch, style: str) -> None:
    md = call_metadata(mint(), sent_ns=time.time_ns(), style=style)

    async def go() -> Any:
        async with aio_server() as target:
            return await aio_call(target, UNARY, md, [b"orders:write"])

    monkeypatch.setattr(_server_call.ServerCall, "trailing", _boom)
    before = _safety.failure_counts().get("server_interceptor", 0)
    outcome = asyncio.run(go())
    assert outcome.code == grpc.StatusCode.PERMISSION_DENIED
    assert "grpc-status-details-bin" in outcome.trailing and c.METADATA_CLOCK not in outcome.trailing
    assert _safety.failure_counts()["server_interceptor"] > before


def test_a_client_cancelling_a_stream_is_not_a_failure(sync_server: str, exporter: Any, mint: Any) -> None:
    """The response generator is closed from wherever grpc closes it: jitrace's state is dropped without a failure."""
    before = _safety.failure_counts().get("server_interceptor", 0)
    with raw_channel(sync_server) as channel:
        stream = channel.stream_stream(STREAM_STREAM)(iter([b"orders:read"] + [b"more"] * 50),
                                                      metadata=call_metadata(mint(), sent_ns=time.time_ns()),
                                                      timeout=10)
        assert next(stream) == b"ok:0"
        stream.cancel()
    span = server_span(exporter)
    assert span.attributes[c.TOKEN_VERDICT] == c.VERDICT_VALID
    assert _safety.failure_counts().get("server_interceptor", 0) == before
    # the next call on the same server gets a state of its own
    exporter.clear()
    assert sync_call(sync_server, UNARY, call_metadata(None)).code == grpc.StatusCode.UNAUTHENTICATED
    assert server_span(exporter).attributes[c.TOKEN_VERDICT] == c.VERDICT_MISSING
