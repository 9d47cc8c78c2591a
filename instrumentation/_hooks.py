"""Where jitrace hooks into grpc: the channel and server constructors, placed relative to OpenTelemetry's own hooks.

jitrace's interceptors must run *inside* OpenTelemetry's (docs/contract.md, Pitfalls): its facts go on OTel's span,
which is current only while OTel's interceptor runs. The placement must not depend on which instrumentor ran first:

- sync channels: OpenTelemetry wraps ``grpc.insecure_channel`` / ``grpc.secure_channel`` with ``wrapt`` and
  intercepts the channel the wrapped function returns. jitrace's wrapper goes at the *bottom* of that chain (just
  above the raw grpc function), so the raw channel is always wrapped by jitrace first.
- aio channels and both servers: OpenTelemetry puts its interceptor(s) first in the ``interceptors`` list.
  jitrace inserts its own right after the last OpenTelemetry interceptor in the list (first when there is none);
  whichever wrapper runs first, the list ends up ``[otel..., jitrace, user...]``.
- a sync server with no interceptors of the service's own (``[otel...]``, or none): no interceptor of jitrace's; it
  wraps the server's method handlers instead, as they are registered (``handlers=``, and ``_Server``'s
  ``add_generic_rpc_handlers`` and ``add_registered_method_handlers``, hooked for such servers only). The handler
  OpenTelemetry's interceptor wraps is then jitrace's, as it would be behind jitrace's interceptor, and grpc's
  interceptor pipeline has one level less to walk on every call.

Every hook is a wrapt wrapper (:mod:`._patching`), taken out again by :func:`unpatch`; each is a pass-through while
its side is off, so one left under another library's plain-function wrapper changes nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import grpc
import grpc._server
import grpc.aio

from jitrace.instrumentation import _patching, _safety

_CHANNELS = ("insecure_channel", "secure_channel")
_COMPOSERS = ("composite_call_credentials", "composite_channel_credentials")
# The parameters from ``interceptors`` on, in order: positional arguments there are passed on as keywords (so that
# OpenTelemetry's wrapper, which only looks at the keyword, does not collide with them).
_AIO_CHANNEL_PARAMS = {
    "insecure_channel": (3, ("interceptors",)),
    "secure_channel": (4, ("interceptors",)),
}
_SERVER_PARAMS = (2, ("interceptors", "options", "maximum_concurrent_rpcs", "compression", "xds"))
_SERVER_HANDLER_PARAMS = (1, ("handlers", *_SERVER_PARAMS[1]))
# grpc's sync server class, whose handler registration jitrace hooks (None: another grpc, interceptors only)
_SERVER_CLASS = getattr(grpc._server, "_Server", None)  # noqa: SLF001
# the sync servers whose handlers jitrace wraps as they are registered
_handler_servers: weakref.WeakSet[Any] = weakref.WeakSet()
_AIO_SERVER_PARAMS = (2, ("interceptors", "options", "maximum_concurrent_rpcs", "compression"))

_active = {"client": False, "server": False}


def _is_otel(interceptor: object) -> bool:
    return type(interceptor).__module__.startswith("opentelemetry.instrumentation.grpc")


def _is_jitrace(interceptor: object) -> bool:
    return type(interceptor).__module__.startswith("jitrace.instrumentation")


def place(interceptors: list[Any], ours: list[Any]) -> list[Any]:
    """``interceptors`` with ``ours`` right after the last OpenTelemetry interceptor; unchanged if jitrace is in."""
    if any(_is_jitrace(i) for i in interceptors):
        return interceptors
    at = 0
    for index, interceptor in enumerate(interceptors):
        if _is_otel(interceptor):
            at = index + 1
    return interceptors[:at] + ours + interceptors[at:]


def _as_keywords(args: tuple, kwargs: dict, params: tuple[int, tuple[str, ...]]) -> tuple[tuple, dict] | None:
    """The positional arguments from ``params``'s position on passed as keywords (so that OpenTelemetry's wrapper,
    which only looks at the keyword, does not collide with them); None when there are more than the signature has
    (grpc will say so, not us)."""
    pos, names = params
    if len(args) > pos:
        if len(args) - pos > len(names):
            return None
        kwargs = {**kwargs, **dict(zip(names, args[pos:], strict=False))}
        args = args[:pos]
    return args, kwargs


def _with_interceptors(args: tuple, kwargs: dict, params: tuple[int, tuple[str, ...]],
                       make: Callable[[], list[Any]]) -> tuple[tuple, dict]:
    """The constructor arguments with jitrace's interceptors placed; the originals if anything goes wrong."""
    try:
        ours = make()
        keywords = _as_keywords(args, kwargs, params)
        if keywords is None:
            return args, kwargs
        args, kwargs = keywords
        kwargs = {**kwargs, "interceptors": place(list(kwargs.get("interceptors") or ()), ours)}
    except Exception:  # noqa: BLE001 - a service must start even if jitrace cannot join it
        _safety.count("hook")
    return args, kwargs


def _with_handlers(args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """``grpc.server``'s arguments with its handlers wrapped, when its only interceptors are OpenTelemetry's (see
    the module's docstring); None when jitrace joins it with an interceptor instead."""
    if _SERVER_CLASS is None or not hasattr(_SERVER_CLASS, "add_generic_rpc_handlers"):
        return None
    try:
        keywords = _as_keywords(args, kwargs, _SERVER_HANDLER_PARAMS)
        if keywords is None:
            return None
        args, kwargs = keywords
        interceptors = kwargs.get("interceptors")
        if interceptors is not None and (not isinstance(interceptors, list | tuple)
                                         or not all(_is_otel(i) for i in interceptors)):
            return None
        if kwargs.get("handlers") is not None:
            from jitrace.instrumentation import _server

            kwargs = {**kwargs, "handlers": _server.wrap_generic_handlers(kwargs["handlers"])}
    except Exception:  # noqa: BLE001
        _safety.count("hook")
        return None
    return args, kwargs


def _channel_credentials(name: str, args: tuple, kwargs: dict) -> object:
    """The ``credentials`` argument of ``secure_channel(target, credentials, ...)``; None for an insecure channel."""
    if name != "secure_channel":
        return None
    return args[1] if len(args) > 1 else kwargs.get("credentials")


def _target(args: tuple, kwargs: dict) -> str | None:
    """The ``target`` argument of a channel constructor (its clock-stamp schedule's key), if it is a string."""
    target = args[0] if args else kwargs.get("target")
    return target if isinstance(target, str) else None


# --- the wrappers (wrapt's signature: wrapped, instance, args, kwargs) ------------------------------------------
def _sync_channel(name: str) -> _patching.Wrapper:
    """The wrapper of ``grpc.<name>``: the channel it returns, wrapped in jitrace's channel."""

    def channel(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        made = wrapped(*args, **kwargs)
        if not _active["client"]:
            return made
        try:
            from jitrace.instrumentation import _client

            return _client.JitraceChannel(made, _channel_credentials(name, args, kwargs), _target(args, kwargs))
        except Exception:  # noqa: BLE001
            _safety.count("hook")
            return made

    return channel


def _aio_channel(name: str) -> _patching.Wrapper:
    """The wrapper of ``grpc.aio.<name>``: jitrace's interceptors placed in its ``interceptors``."""

    def channel(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        if _active["client"]:
            credentials, target = _channel_credentials(name, args, kwargs), _target(args, kwargs)

            def make() -> list[Any]:
                from jitrace.instrumentation import _aio_client

                return _aio_client.aio_client_interceptors(credentials, target)

            args, kwargs = _with_interceptors(args, kwargs, _AIO_CHANNEL_PARAMS[name], make)
        return wrapped(*args, **kwargs)

    return channel


def _composer(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    if not _active["client"] or kwargs:
        return wrapped(*args, **kwargs)
    from jitrace.instrumentation import _credentials

    return _credentials.compose(wrapped, *args)


def _sync_server_interceptors() -> list[Any]:
    from jitrace.instrumentation import _server

    return [_server.server_interceptor()]


def _aio_server_interceptors() -> list[Any]:
    from jitrace.instrumentation import _aio_server

    return [_aio_server.aio_server_interceptor()]


def _sync_server(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    if not _active["server"]:
        return wrapped(*args, **kwargs)
    with_handlers = _with_handlers(args, kwargs)
    if with_handlers is None:
        args, kwargs = _with_interceptors(args, kwargs, _SERVER_PARAMS, _sync_server_interceptors)
        return wrapped(*args, **kwargs)
    server = wrapped(*with_handlers[0], **with_handlers[1])
    try:
        _handler_servers.add(server)
    except TypeError:  # not an object grpc's own class makes (another library's wrapper): nothing more wrapped
        _safety.count("hook")
    return server


def _add_generic_rpc_handlers(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """``_Server.add_generic_rpc_handlers(generic_rpc_handlers)``: wrapped for a server jitrace joined so."""
    if instance in _handler_servers and len(args) + len(kwargs) == 1:
        from jitrace.instrumentation import _server

        try:
            if args:
                args = (_server.wrap_generic_handlers(args[0]),)
            elif "generic_rpc_handlers" in kwargs:
                kwargs = {"generic_rpc_handlers": _server.wrap_generic_handlers(kwargs["generic_rpc_handlers"])}
        except Exception:  # noqa: BLE001 - not an iterable of handlers: grpc will say so, not us
            _safety.count("hook")
    return wrapped(*args, **kwargs)


def _add_registered_method_handlers(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """``_Server.add_registered_method_handlers(service_name, method_handlers)``: as above."""
    if instance in _handler_servers:
        from jitrace.instrumentation import _server

        try:
            if len(args) == 2 and not kwargs:
                args = (args[0], _server.wrap_method_handlers(args[1]))
            elif "method_handlers" in kwargs and len(args) + len(kwargs) == 2:
                kwargs = {**kwargs, "method_handlers": _server.wrap_method_handlers(kwargs["method_handlers"])}
        except Exception:  # noqa: BLE001 - not a mapping: grpc will say so, not us
            _safety.count("hook")
    return wrapped(*args, **kwargs)


def _aio_server(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    if _active["server"]:
        args, kwargs = _with_interceptors(args, kwargs, _AIO_SERVER_PARAMS, _aio_server_interceptors)
    return wrapped(*args, **kwargs)


# what each side patches: (module, attribute, wrapper, innermost)
_CLIENT_PATCHES = (
    *((grpc, name, _sync_channel(name), True) for name in _CHANNELS),
    *((grpc.aio, name, _aio_channel(name), False) for name in _CHANNELS),
    *((grpc, name, _composer, False) for name in _COMPOSERS),
)
_SERVER_PATCHES = (
    (grpc, "server", _sync_server, False),
    (grpc.aio, "server", _aio_server, False),
    # the sync server's handler registrations (add_registered_method_handlers is grpc >= 1.62's)
    *((_SERVER_CLASS, name, wrapper, False)
      for name, wrapper in (("add_generic_rpc_handlers", _add_generic_rpc_handlers),
                            ("add_registered_method_handlers", _add_registered_method_handlers))
      if _SERVER_CLASS is not None and hasattr(_SERVER_CLASS, name)),
)


# --- the switches -----------------------------------------------------------------------------------------------
def patch_client() -> None:
    """Hook the channel constructors (sync and aio) and the credentials composers; idempotent."""
    for module, name, wrapper, innermost in _CLIENT_PATCHES:
        _patching.wrap(module, name, wrapper, innermost=innermost)
    _active["client"] = True


def patch_server() -> None:
    """Hook the server constructors (sync and aio); idempotent."""
    for module, name, wrapper, innermost in _SERVER_PATCHES:
        _patching.wrap(module, name, wrapper, innermost=innermost)
    _active["server"] = True


def unpatch() -> None:
    """Undo both sides: grpc's constructors are what they were (under any other library's wrappers)."""
    _active["client"] = False
    _active["server"] = False
    for module, name, wrapper, _ in (*_CLIENT_PATCHES, *_SERVER_PATCHES):
        _patching.unwrap(module, name, wrapper)


def patched() -> dict[str, bool]:
    """Whether each of grpc's hooked functions carries jitrace's wrapper, by ``module.name``."""
    return {f"{module.__name__}.{name}": _patching.wrapped(module, name, wrapper)
            for module, name, wrapper, _ in (*_CLIENT_PATCHES, *_SERVER_PATCHES)}
