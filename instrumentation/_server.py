"""The sync gRPC server interceptor: jit.* facts on OpenTelemetry's server span, clock stamps echoed to the client.

It must sit right after OpenTelemetry's interceptor (the instrumentor places it there): OpenTelemetry starts its span
when the handler is *invoked*, on a thread-pool thread, so jitrace wraps the handler's behaviour and does its work
inside that invocation, where OpenTelemetry's span is current (docs/contract.md, Pitfalls). What it records and
echoes is the shared core's (:mod:`._server_call`); what is sync is the handler's context, whose
``abort_with_status`` goes through ``abort`` so that OpenTelemetry records the code and jitrace's echo joins the
status's metadata when the call unwinds. Everything jitrace does is guarded: its own failure is counted and the
call goes on exactly as without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from jitrace.instrumentation import _safety, _server_call, _settings
from jitrace.instrumentation._server_call import Forwarding, Metadata, ServerCall, wrap_handler, wrap_sync
from jitrace.instrumentation._settings import Settings


class ServicerContext(Forwarding, grpc.ServicerContext):
    """The handler's context: :class:`Forwarding`, and ``abort_with_status`` as what it means (trailing metadata +
    ``abort``): grpc's own replaces the trailing metadata and aborts, bypassing OpenTelemetry's wrapper (so
    ``rpc.grpc.status_code`` was never set). ``touched``: whether the handler set trailing metadata or aborted (if
    not, the reply's trailing metadata is empty, and jitrace does not read it back). Its invocation metadata is the
    tuple jitrace read when the call started, handed out without going back through OpenTelemetry's context."""

    __slots__ = ("_context", "_metadata", "touched")

    def __init__(self, context: grpc.ServicerContext, call: ServerCall) -> None:
        self._context = context
        self._metadata = call.metadata  # read once when the call started: the same tuple grpc hands out
        self.touched = False

    def invocation_metadata(self) -> Any:
        return self._metadata

    def abort_with_status(self, status: grpc.Status) -> None:
        self.touched = True
        try:
            metadata = tuple(status.trailing_metadata or ())
            code, details = status.code, status.details
        except Exception:  # noqa: BLE001 - not a status we understand: grpc decides what it means
            _safety.count("server_interceptor")
            return self._context.abort_with_status(status)
        self._context.set_trailing_metadata(metadata)
        return self._context.abort(code, details)

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        self.touched = True
        return self._context.set_trailing_metadata(trailing_metadata)

    # the sync context's own methods, forwarded
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.touched = True
        return self._context.abort(code, details)

    def is_active(self) -> bool:
        return self._context.is_active()

    def cancel(self) -> None:
        return self._context.cancel()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return self._context.add_callback(callback)


def _wrap_behavior(behavior: Callable[..., Any], response_streaming: bool) -> Callable[..., Any]:
    return wrap_sync(behavior, response_streaming, ServicerContext)


class JitraceServerInterceptor(grpc.ServerInterceptor):
    """Puts jit.* facts on the current (OpenTelemetry) server span; place it right after OpenTelemetry's."""

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if not _settings._current.enabled:  # noqa: SLF001 - see _settings
            return handler
        hit = _sync_wrapped.get(id(handler))  # the look-up of wrap_handler, inline: this runs on every call
        if hit is not None and hit[0] is handler:
            return hit[1]
        try:
            return wrap_handler(handler, _wrap_behavior)
        except Exception:  # noqa: BLE001 - an odd handler is served as it is
            _safety.count("server_interceptor")
            return handler


_sync_wrapped = _server_call.handler_cache(_wrap_behavior)


def server_interceptor(settings: Settings | None = None) -> JitraceServerInterceptor:
    """A new sync server interceptor. ``settings`` are applied process-wide (``_settings.configure``) when given."""
    if settings is not None:
        _settings.configure(settings)
    return JitraceServerInterceptor()
