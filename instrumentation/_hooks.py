"""Where jitrace hooks into grpc: the channel and server constructors, placed relative to OpenTelemetry's own hooks.

jitrace's interceptors must run *inside* OpenTelemetry's (docs/contract.md, Pitfalls): its facts go on OTel's span,
which is current only while OTel's interceptor runs. The placement must not depend on which instrumentor ran first:

- sync channels: OpenTelemetry wraps ``grpc.insecure_channel`` / ``grpc.secure_channel`` with ``wrapt`` and
  intercepts the channel the wrapped function returns. jitrace's wrapper goes at the *bottom* of that chain (just
  above the raw grpc function), so the raw channel is always wrapped by jitrace first.
- aio channels and both servers: OpenTelemetry puts its interceptor(s) first in the ``interceptors`` list.
  jitrace inserts its own right after the last OpenTelemetry interceptor in the list (first when there is none);
  whichever wrapper runs first, the list ends up ``[otel..., jitrace, user...]``.

Every hook is a wrapt wrapper (:mod:`._patching`), taken out again by :func:`unpatch`; each is a pass-through while
its side is off, so one left under another library's plain-function wrapper changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
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


def _with_interceptors(args: tuple, kwargs: dict, params: tuple[int, tuple[str, ...]],
                       make: Callable[[], list[Any]]) -> tuple[tuple, dict]:
    """The constructor arguments with jitrace's interceptors placed; the originals if anything goes wrong."""
    pos, names = params
    try:
        ours = make()
        if len(args) > pos:
            if len(args) - pos > len(names):
                return args, kwargs  # more positionals than the signature has: grpc will say so, not us
            kwargs = {**kwargs, **dict(zip(names, args[pos:], strict=False))}
            args = args[:pos]
        kwargs = {**kwargs, "interceptors": place(list(kwargs.get("interceptors") or ()), ours)}
    except Exception:  # noqa: BLE001 - a service must start even if jitrace cannot join it
        _safety.count("hook")
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
    if _active["server"]:
        args, kwargs = _with_interceptors(args, kwargs, _SERVER_PARAMS, _sync_server_interceptors)
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
_SERVER_PATCHES = ((grpc, "server", _sync_server, False), (grpc.aio, "server", _aio_server, False))


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
