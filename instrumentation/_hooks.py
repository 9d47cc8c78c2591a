"""Where jitrace hooks into grpc: the channel and server constructors, placed relative to OpenTelemetry's own hooks.

jitrace's interceptors must run *inside* OpenTelemetry's (docs/contract.md, Pitfalls): its facts go on OTel's span,
which is current only while OTel's interceptor runs. The placement must not depend on which instrumentor ran first:

- sync channels: OpenTelemetry wraps ``grpc.insecure_channel`` / ``grpc.secure_channel`` with ``wrapt`` and
  intercepts the channel the wrapped function returns. jitrace puts its own ``wrapt`` wrapper at the *bottom* of
  that chain (just above the raw grpc function), so the raw channel is always intercepted by jitrace first.
- aio channels and both servers: OpenTelemetry puts its interceptor(s) first in the ``interceptors`` list.
  jitrace inserts its own right after the last OpenTelemetry interceptor in the list (first when there is none);
  whichever wrapper runs first, the list ends up ``[otel..., jitrace, user...]``.

Each hook is a pass-through while its side is inactive, so a hook left buried under another library's wrapper
after ``uninstrument()`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import wrapt

from jitrace.instrumentation import _safety

_CHANNELS = ("insecure_channel", "secure_channel")
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


# --- sync channels ----------------------------------------------------------------------------------------------
def _channel_credentials(name: str, args: tuple, kwargs: dict) -> object:
    """The ``credentials`` argument of ``secure_channel(target, credentials, ...)``; None for an insecure channel."""
    if name != "secure_channel":
        return None
    return args[1] if len(args) > 1 else kwargs.get("credentials")


def _target(args: tuple, kwargs: dict) -> str | None:
    """The ``target`` argument of a channel constructor (its clock-stamp schedule's key), if it is a string."""
    target = args[0] if args else kwargs.get("target")
    return target if isinstance(target, str) else None


def _sync_channel(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    channel = wrapped(*args, **kwargs)
    if not _active["client"]:
        return channel
    try:
        from jitrace.instrumentation import _client

        credentials = _channel_credentials(getattr(wrapped, "__name__", ""), args, kwargs)
        return _client.JitraceChannel(channel, credentials, _target(args, kwargs))
    except Exception:  # noqa: BLE001
        _safety.count("hook")
        return channel


def _chain(name: str) -> list[Any]:
    """``grpc.<name>`` and every ``wrapt`` wrapper under it, outermost first."""
    chain = [getattr(grpc, name)]
    # wrapt's FunctionWrapper (what OpenTelemetry uses); checked by its attributes, stable across wrapt 1 and 2
    while hasattr(chain[-1], "_self_wrapper") and hasattr(chain[-1], "__wrapped__"):
        chain.append(chain[-1].__wrapped__)
    return chain


def _is_ours(obj: Any) -> bool:
    return getattr(obj, "_self_wrapper", None) is _sync_channel


def _patch_sync_channels() -> None:
    for name in _CHANNELS:
        chain = _chain(name)
        if any(_is_ours(link) for link in chain):
            continue
        ours = wrapt.FunctionWrapper(chain[-1], _sync_channel)
        if len(chain) == 1:
            setattr(grpc, name, ours)
        else:
            chain[-2].__wrapped__ = ours  # under every other wrapper: the raw channel is ours first


def _unpatch_sync_channels() -> None:
    for name in _CHANNELS:
        chain = _chain(name)
        for index, link in enumerate(chain):
            if _is_ours(link):
                if index == 0:
                    setattr(grpc, name, link.__wrapped__)
                else:
                    chain[index - 1].__wrapped__ = link.__wrapped__


# --- aio channels -----------------------------------------------------------------------------------------------
def _aio_interceptors(credentials: object, target: str | None) -> Callable[[], list[Any]]:
    def make() -> list[Any]:
        from jitrace.instrumentation import _aio_client

        return _aio_client.aio_client_interceptors(credentials, target)

    return make


def _make_aio_channel(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def channel(*args: Any, **kwargs: Any) -> Any:
        if _active["client"]:
            make = _aio_interceptors(_channel_credentials(name, args, kwargs), _target(args, kwargs))
            args, kwargs = _with_interceptors(args, kwargs, _AIO_CHANNEL_PARAMS[name], make)
        return original(*args, **kwargs)

    channel._jitrace_original = original  # type: ignore[attr-defined]
    channel.__name__ = name
    channel.__doc__ = original.__doc__
    return channel


def _patch_aio_channels() -> None:
    for name in _CHANNELS:
        current = getattr(grpc.aio, name)
        if hasattr(current, "_jitrace_original"):
            continue
        setattr(grpc.aio, name, _make_aio_channel(name, current))


def _restore(module: Any, name: str) -> None:
    """Put back what a wrapper of jitrace's replaced (it carries it: ``_jitrace_original``)."""
    current = getattr(module, name)
    if hasattr(current, "_jitrace_original"):
        setattr(module, name, current._jitrace_original)
    # else another library wrapped ours: it stays, inactive (a pass-through)


# --- composed credentials ---------------------------------------------------------------------------------------
_COMPOSERS = ("composite_call_credentials", "composite_channel_credentials")


def _make_composer(original: Callable[..., Any]) -> Callable[..., Any]:
    def compose(*parts: Any) -> Any:
        if not _active["client"]:
            return original(*parts)
        from jitrace.instrumentation import _credentials

        return _credentials.compose(original, *parts)

    compose._jitrace_original = original  # type: ignore[attr-defined]
    compose.__name__ = original.__name__
    compose.__doc__ = original.__doc__
    return compose


def _patch_composers() -> None:
    for name in _COMPOSERS:
        current = getattr(grpc, name)
        if hasattr(current, "_jitrace_original"):
            continue
        setattr(grpc, name, _make_composer(current))


# --- servers ----------------------------------------------------------------------------------------------------
def _sync_server_interceptors() -> list[Any]:
    from jitrace.instrumentation import _server

    return [_server.server_interceptor()]


def _aio_server_interceptors() -> list[Any]:
    from jitrace.instrumentation import _aio_server

    return [_aio_server.aio_server_interceptor()]


def _make_server(original: Callable[..., Any], make: Callable[[], list[Any]],
                 params: tuple[int, tuple[str, ...]]) -> Callable[..., Any]:
    def server(*args: Any, **kwargs: Any) -> Any:
        if _active["server"]:
            args, kwargs = _with_interceptors(args, kwargs, params, make)
        return original(*args, **kwargs)

    server._jitrace_original = original  # type: ignore[attr-defined]
    server.__name__ = "server"
    server.__doc__ = original.__doc__
    return server


def _patch_servers() -> None:
    for module, make, params in ((grpc, _sync_server_interceptors, _SERVER_PARAMS),
                                 (grpc.aio, _aio_server_interceptors, _AIO_SERVER_PARAMS)):
        current = module.server
        if hasattr(current, "_jitrace_original"):
            continue
        module.server = _make_server(current, make, params)


# --- the switches -----------------------------------------------------------------------------------------------
def patch_client() -> None:
    """Hook the channel constructors (sync and aio) and the credentials composers; idempotent."""
    _patch_sync_channels()
    _patch_aio_channels()
    _patch_composers()
    _active["client"] = True


def patch_server() -> None:
    """Hook the server constructors (sync and aio); idempotent."""
    _patch_servers()
    _active["server"] = True


def unpatch() -> None:
    """Undo both sides: channels and servers made from now on are plain grpc again."""
    _active["client"] = False
    _active["server"] = False
    _unpatch_sync_channels()
    for name in _CHANNELS:
        _restore(grpc.aio, name)
    for name in _COMPOSERS:
        _restore(grpc, name)
    _restore(grpc, "server")
    _restore(grpc.aio, "server")
