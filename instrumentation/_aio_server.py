"""The grpc.aio server interceptor: the same facts as :mod:`._server` (the core is :mod:`._server_call`), for
asyncio servers.

Differences from sync: ``abort`` sends the status at once (trailing metadata included), so the ``jit-clock`` echo is
added inside jitrace's context wrapper's ``abort`` rather than when the handler unwinds; ``abort_with_status`` is
routed through ``abort`` so OpenTelemetry's wrapper records ``rpc.grpc.status_code``. Each aio call runs in a task
of its own, so the per-call state (a contextvar) is seen by every check the handler awaits; not by work it hands to
an executor thread.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from jitrace.instrumentation import _safety, _settings
from jitrace.instrumentation._server_call import (
    Forwarding,
    ServerCall,
    finish,
    set_status_code,
    start,
    wrap_handler,
    wrap_sync,
)
from jitrace.instrumentation._settings import Settings


class _Forwarding(Forwarding, grpc.aio.ServicerContext):
    """A grpc.aio handler's context: :class:`Forwarding`, and the aio context's own methods forwarded (coroutines are
    returned for the handler to await). The subclasses below change what jitrace must see."""

    __slots__ = ("_context", "_call")

    def __init__(self, context: Any, call: ServerCall) -> None:
        self._context = context
        self._call = call

    def read(self) -> Any:
        return self._context.read()

    def write(self, message: Any) -> Any:
        return self._context.write(message)

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> Any:
        return self._context.abort(code, details, trailing_metadata)

    def abort_with_status(self, status: grpc.Status) -> Any:
        return self._context.abort_with_status(status)

    def add_done_callback(self, callback: Any) -> None:
        return self._context.add_done_callback(callback)

    def cancelled(self) -> bool:
        return self._context.cancelled()

    def done(self) -> bool:
        return self._context.done()


class _AioServicerContext(_Forwarding):
    """An async handler's context: ``abort`` sends the status at once, so the echo is merged into it there."""

    __slots__ = ()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        merged = None
        with _safety.guard("server_interceptor"):
            current = trailing_metadata or self._context.trailing_metadata()
            merged = self._call.trailing(tuple(current or ()))
        if merged is None:
            return await self._context.abort(code, details, trailing_metadata)
        return await self._context.abort(code, details, merged)

    async def abort_with_status(self, status: grpc.Status) -> None:
        try:
            code, details, metadata = status.code, status.details, tuple(status.trailing_metadata or ())
        except Exception:  # noqa: BLE001 - not a status we understand: grpc decides what it means
            _safety.count("server_interceptor")
            return await self._context.abort_with_status(status)
        return await self.abort(code, details, metadata)


class _SyncAioContext(_Forwarding):
    """The context of a sync handler on a grpc.aio server: it cannot read back its trailing metadata, and its
    ``abort`` sends the status at once, so jitrace remembers what the handler set and merges its echo on abort."""

    __slots__ = ("_trailing",)

    def __init__(self, context: Any, call: ServerCall) -> None:
        super().__init__(context, call)
        self._trailing: tuple = ()

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._context.set_trailing_metadata(trailing_metadata)
        with _safety.guard("server_interceptor"):
            self._trailing = tuple(trailing_metadata or ())

    def trailing_metadata(self) -> tuple:
        return self._trailing

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        merged = None
        with _safety.guard("server_interceptor"):
            merged = self._call.trailing(tuple(trailing_metadata or self._trailing))
        return self._context.abort(code, details, trailing_metadata if merged is None else merged)


def _finish(call: ServerCall, context: Any, token: Any) -> None:
    """The reply leaves (:func:`finish`), and a failed status OpenTelemetry's aio wrapper did not see is recorded."""
    finish(call, context, token)
    try:
        code = context.code()
        if isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK:
            set_status_code(call.span, code)
    except Exception:  # noqa: BLE001 - nothing of ours may fail a call
        _safety.count("server_interceptor")


def _is_async(behavior: Callable[..., Any]) -> bool:
    """grpc.aio's own test: an async handler is awaited on the loop, any other runs on the server's thread pool."""
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)


def _wrap_behavior(behavior: Callable[..., Any], response_streaming: bool) -> Callable[..., Any]:
    if not _is_async(behavior):
        # keep a sync handler sync, so grpc.aio still runs it on its thread pool (where the state is set)
        return wrap_sync(behavior, response_streaming, _SyncAioContext)
    if response_streaming:
        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            call, token, ctx = start(context, _AioServicerContext)
            if call is None:
                async for response in _responses(behavior(request, context)):
                    yield response
                return
            try:
                async for response in _responses(behavior(request, ctx)):
                    yield response
            finally:
                _finish(call, context, token)

        return stream

    async def unary(request: Any, context: Any) -> Any:
        call, token, ctx = start(context, _AioServicerContext)
        if call is None:
            return await _result(behavior(request, context))
        try:
            return await _result(behavior(request, ctx))
        finally:
            _finish(call, context, token)

    return unary


async def _result(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


async def _responses(result: Any) -> AsyncIterator[Any]:
    """A streaming handler's responses: an async generator, or a coroutine that writes with ``context.write``."""
    if hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    elif isinstance(result, Awaitable):
        await result
    else:  # a sync iterator from a sync-style handler
        for response in result:
            yield response


class JitraceAioServerInterceptor(grpc.aio.ServerInterceptor):
    """Puts jit.* facts on the current (OpenTelemetry) server span of a grpc.aio server."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if not _settings.get().enabled:
            return handler
        try:
            return wrap_handler(handler, _wrap_behavior)
        except Exception:  # noqa: BLE001
            _safety.count("server_interceptor")
            return handler


def aio_server_interceptor(settings: Settings | None = None) -> JitraceAioServerInterceptor:
    """A new grpc.aio server interceptor. ``settings`` are applied process-wide when given."""
    if settings is not None:
        _settings.configure(settings)
    return JitraceAioServerInterceptor()
