"""Client side (``grpc.aio``): the same facts as ``_client``, from four aio interceptors (aio sorts interceptors by
shape, one object each).

The interceptor chain of an aio call runs in one task, so OpenTelemetry's client span is current when jitrace's
interceptor starts. A unary reply is awaited here before returning (as OpenTelemetry's interceptor does anyway);
a response stream is relayed through an async generator that records the reply when the stream ends, before
OpenTelemetry's own stream wrapper ends the span.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio

from jitrace.instrumentation import _credentials, _safety
from jitrace.instrumentation._client import Pending, begin, finish, replied


def _begin(details: grpc.aio.ClientCallDetails, channel_plugin: Any,
           target: object) -> tuple[Pending | None, grpc.aio.ClientCallDetails]:
    started = None
    with _safety.guard("aio_client_interceptor"):
        method = details.method
        if isinstance(method, bytes):  # grpc.aio may hand the method over as bytes
            method = method.decode("utf-8", "replace")
        started = begin(details.metadata, details.credentials, method, channel_plugin, target)
    if started is None:
        return None, details
    span, stamp, metadata = started
    pending = Pending(span, stamp)
    if metadata is not None:
        details = grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*metadata),
            details.credentials,
            details.wait_for_ready,
        )
    return pending, details


@_safety.guarded("aio_client_interceptor")
def _finish_error(pending: Pending, error: grpc.aio.AioRpcError) -> None:
    finish(pending, error.trailing_metadata(), error.code())


async def _finish_call(pending: Pending, call: Any) -> None:
    try:
        code = await call.code()
        finish(pending, await call.trailing_metadata() if replied(pending, code) else None, code)
    except grpc.aio.AioRpcError as error:  # some call wrappers raise instead of reporting
        _finish_error(pending, error)
    except Exception:  # noqa: BLE001 - nothing of ours may fail a call
        _safety.count("aio_client_interceptor")


async def _unary_response(continuation: Callable[..., Any], details: Any, request: Any, base: _Base) -> Any:
    pending, details = _begin(details, base._plugin, base._target)
    call = await continuation(details, request)
    if pending is not None:
        await _finish_call(pending, call)
    return call


async def _relay(call: Any, pending: Pending) -> AsyncIterator[Any]:
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError as error:
        _finish_error(pending, error)
        raise
    await _finish_call(pending, call)


async def _stream_response(continuation: Callable[..., Any], details: Any, request: Any, base: _Base) -> Any:
    pending, details = _begin(details, base._plugin, base._target)
    call = await continuation(details, request)
    if pending is None:
        return call
    # grpc.aio wraps a returned iterator so the caller still has the call's methods (as with OpenTelemetry's).
    return _relay(call, pending)


class _Base:
    def __init__(self, channel_credentials: object = None, target: object = None) -> None:
        self._plugin = _credentials.lookup(channel_credentials)  # jitrace credentials baked into the channel
        self._target = target  # whose clock-stamp schedule the channel's calls follow


class UnaryUnaryAioClientInterceptor(_Base, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await _unary_response(continuation, client_call_details, request, self)


class StreamUnaryAioClientInterceptor(_Base, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await _unary_response(continuation, client_call_details, request_iterator, self)


class UnaryStreamAioClientInterceptor(_Base, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await _stream_response(continuation, client_call_details, request, self)


class StreamStreamAioClientInterceptor(_Base, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await _stream_response(continuation, client_call_details, request_iterator, self)


def aio_client_interceptors(channel_credentials: object = None, target: str | None = None) -> list[Any]:
    """New interceptors, one per call shape, for ``grpc.aio.*_channel(interceptors=...)``; ``channel_credentials``:
    the channel's credentials (jitrace's call credentials composed into them are recorded for every call);
    ``target``: the channel's target, whose clock-stamp schedule its calls follow (None: one of their own)."""
    schedule = target if target is not None else object()
    return [
        UnaryUnaryAioClientInterceptor(channel_credentials, schedule),
        UnaryStreamAioClientInterceptor(channel_credentials, schedule),
        StreamUnaryAioClientInterceptor(channel_credentials, schedule),
        StreamStreamAioClientInterceptor(channel_credentials, schedule),
    ]
