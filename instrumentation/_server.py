"""The sync gRPC server: jit.* facts on OpenTelemetry's server span, clock stamps echoed to the client.

jitrace wraps each method handler's behaviour: OpenTelemetry starts its span when the handler is *invoked*, on a
thread-pool thread, so jitrace does its work inside that invocation, where OpenTelemetry's span is current
(docs/contract.md, Pitfalls). Two ways in, the same wrapped handler: an interceptor placed right after
OpenTelemetry's, when the server has interceptors of the service's own (they then run inside jitrace's work, as
placed); on a server whose only interceptors are OpenTelemetry's, the handlers themselves, wrapped when they are
registered (:func:`wrap_generic_handlers`, :func:`wrap_method_handlers`), which adds no level to grpc's
interceptor pipeline and, for grpc's own dictionary handlers and registered methods, no step at all per call.

What it records and echoes is the shared core's (:mod:`._server_call`); what is sync is the handler's context, whose
``abort_with_status`` goes through ``abort`` so that OpenTelemetry records the code and jitrace's echo joins the
status's metadata when the call unwinds. Everything jitrace does is guarded: its own failure is counted and the
call goes on exactly as without it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc

try:  # grpc's own dictionary handler (grpc.method_handlers_generic_handler): rebuilt with its handlers wrapped
    from grpc._utilities import DictionaryGenericHandler
except ImportError:  # pragma: no cover - another grpc: every generic handler is wrapped as any other
    DictionaryGenericHandler = None

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


def _wrapped_handler(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
    """``handler`` wrapped (built once per handler); an odd handler is served as it is (counted)."""
    try:
        return wrap_handler(handler, _wrap_behavior)
    except Exception:  # noqa: BLE001
        _safety.count("server_interceptor")
        return handler


class _GenericHandler(grpc.GenericRpcHandler):
    """A service's generic handler whose method handlers come out wrapped; anything else is looked up on it."""

    __slots__ = ("_handler",)

    def __init__(self, handler: grpc.GenericRpcHandler) -> None:
        self._handler = handler

    def __getattr__(self, name: str) -> Any:
        if name == "_handler":  # not set yet (a copy being made): not to be looked up on itself
            raise AttributeError(name)
        return getattr(self._handler, name)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._handler.service(handler_call_details)
        hit = _sync_wrapped.get(id(handler))  # the look-up of wrap_handler, inline: this runs on every call
        if hit is not None and hit[0] is handler:
            return hit[1]
        return None if handler is None else _wrapped_handler(handler)


def _wrap_generic(handler: Any) -> Any:
    """grpc's dictionary handler (``method_handlers_generic_handler``): a copy holding the wrapped handlers, so a
    call costs what it did; any other generic handler: a :class:`_GenericHandler` around it."""
    if DictionaryGenericHandler is not None and type(handler) is DictionaryGenericHandler and \
            type(getattr(handler, "_method_handlers", None)) is dict:
        rebuilt = copy.copy(handler)
        rebuilt._method_handlers = {method: _wrapped_handler(h)  # noqa: SLF001 - grpc's own class, checked
                                    for method, h in handler._method_handlers.items()}  # noqa: SLF001
        return rebuilt
    return _GenericHandler(handler)


def wrap_generic_handlers(handlers: Iterable[Any]) -> tuple[Any, ...]:
    """A server's generic handlers (``grpc.server(handlers=...)``, ``add_generic_rpc_handlers``), their method
    handlers wrapped; those that cannot be are kept as they are (counted)."""
    wrapped = []
    for handler in handlers:
        try:
            wrapped.append(_wrap_generic(handler))
        except Exception:  # noqa: BLE001 - a service must start even if jitrace cannot join it
            _safety.count("server_interceptor")
            wrapped.append(handler)
    return tuple(wrapped)


def wrap_method_handlers(method_handlers: Mapping[str, Any]) -> dict[str, Any]:
    """A service's registered method handlers (``add_registered_method_handlers``), wrapped."""
    return {method: _wrapped_handler(handler) for method, handler in method_handlers.items()}


def server_interceptor(settings: Settings | None = None) -> JitraceServerInterceptor:
    """A new sync server interceptor. ``settings`` are applied process-wide (``_settings.configure``) when given."""
    if settings is not None:
        _settings.configure(settings)
    return JitraceServerInterceptor()
