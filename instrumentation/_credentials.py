"""Call credentials whose token facts reach the client span.

gRPC runs call credentials *after* the interceptors, on one of its own threads, where OpenTelemetry's client span is
not current. So the credentials do not record anything themselves: each one is registered here, and jitrace's client
interceptor, seeing registered credentials in ``call_details.credentials``, asks them for the token they are about
to send (:meth:`_Plugin.prepare`) and records its facts on the span. The token itself stays in the plugin.

Where they are recognised: passed per call (``stub.Method(req, credentials=creds)``), composed with
``grpc.composite_call_credentials``, or baked into a channel with ``grpc.composite_channel_credentials`` and
``grpc.secure_channel`` / ``grpc.aio.secure_channel`` (the instrumentor hooks those two composing functions; a
channel-wide plugin applies to every call of the channel that has no jitrace credentials of its own).

Limits (documented in README):
- credentials composed *before* ``instrument()`` ran, or composed by other means (e.g. google-auth's own
  ``AuthMetadataPlugin``), are not recognised: their token facts are not recorded (the call works as usual).
- the interceptor decides the token at send (calling the callable, or refreshing, on the caller's thread) and
  hands it to the plugin, which sends that token (taken once, within a few seconds). Under heavy concurrency on one
  credentials object a plugin may take a sibling call's handed token: the facts then describe a token of the same
  source fetched a moment apart. Without jitrace's interceptor the plugin decides by itself.
- ``refreshing_credentials``: the refreshed flag belongs to the call whose send triggered the refresh.
- gRPC sends call credentials only on secure channels (TLS or ``grpc.local_channel_credentials()``).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable

import grpc

from jitrace.instrumentation import _settings, _token

_HANDOFF_S = 5.0  # a token prepared by the interceptor is handed to the plugin only this long

# call credentials (and credentials composed from them, see compose) -> the plugin behind them
_registry: weakref.WeakKeyDictionary[object, _Plugin] = weakref.WeakKeyDictionary()


class _Plugin(grpc.AuthMetadataPlugin):
    """Base: attaches ``<key>: Bearer <token>`` and tells the interceptor which token that is.

    The interceptor's :meth:`prepare` decides the token (fetching or refreshing as needed) and hands it to the
    plugin, which sends exactly that token instead of deciding again (it would judge the lifetime a moment later
    and could pick another token than the one recorded).
    """

    def __init__(self) -> None:
        self._handoff_lock = threading.Lock()
        self._handoff: tuple[str, float] | None = None

    def prepare(self) -> tuple[str | None, bool | None]:
        """The token the next call sends, and whether it was just refreshed (None: not a refreshing credential)."""
        token, refreshed = self._decide()
        with self._handoff_lock:
            self._handoff = (token, time.monotonic())
        return token, refreshed

    def _decide(self) -> tuple[str, bool | None]:
        raise NotImplementedError

    def _token_to_send(self) -> str:
        with self._handoff_lock:
            handoff, self._handoff = self._handoff, None
        if handoff is not None and time.monotonic() - handoff[1] < _HANDOFF_S:
            return handoff[0]
        return self._decide()[0]  # no interceptor prepared this call: decide here

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        try:
            token = self._token_to_send()
        except Exception as exc:  # noqa: BLE001 - the user's fetch failed: gRPC fails the call with it
            callback(None, exc)
            return
        key = _settings.get().token_metadata_key
        callback(((key, f"Bearer {token}"),), None)


class _StaticPlugin(_Plugin):
    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def _decide(self) -> tuple[str, bool | None]:
        return self._token, None


class _CallablePlugin(_Plugin):
    def __init__(self, get_token: Callable[[], str]) -> None:
        super().__init__()
        self._get_token = get_token

    def _decide(self) -> tuple[str, bool | None]:
        return self._get_token(), None


class _RefreshingPlugin(_Plugin):
    def __init__(self, fetch: Callable[[], str], refresh_before_s: float | None) -> None:
        super().__init__()
        self._fetch = fetch
        self._refresh_before_s = refresh_before_s
        self._lock = threading.Lock()
        self._token: str | None = None
        self._exp: float | None = None

    def _threshold(self) -> float:
        if self._refresh_before_s is not None:
            return self._refresh_before_s
        return _settings.get().refresh_before_s

    def current(self, now_s: float | None = None) -> tuple[str, bool]:
        """The token to use now, fetching a new one when it has less than the threshold left; and whether it did."""
        now_s = time.time() if now_s is None else now_s
        with self._lock:
            stale = self._token is None or (self._exp is not None and self._exp - now_s < self._threshold())
            if not stale:
                return self._token, False  # type: ignore[return-value]
            refreshed = self._token is not None  # the first fetch is not a refresh
            token = self._fetch()
            claims = _token.unverified_claims(token) or {}
            exp = claims.get("exp")
            self._token = token
            self._exp = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
            return token, refreshed

    def _decide(self) -> tuple[str, bool | None]:
        return self.current()


def _register(plugin: _Plugin, name: str) -> grpc.CallCredentials:
    credentials = grpc.metadata_call_credentials(plugin, name=name)
    _registry[credentials] = plugin
    return credentials


def bearer_credentials(token_or_callable: str | Callable[[], str]) -> grpc.CallCredentials:
    """Call credentials sending ``authorization: Bearer <token>``; jitrace records the token's facts on the span.

    Pass a token, or a callable returning the token to send on each call.
    """
    if callable(token_or_callable):
        return _register(_CallablePlugin(token_or_callable), "jitrace-bearer")
    if not isinstance(token_or_callable, str) or not token_or_callable:
        raise TypeError("bearer_credentials needs a non-empty token string or a callable returning one")
    return _register(_StaticPlugin(token_or_callable), "jitrace-bearer")


def refreshing_credentials(fetch: Callable[[], str], *, refresh_before_s: float | None = None) -> grpc.CallCredentials:
    """Call credentials that keep a token and fetch a new one when it has less than ``refresh_before_s`` left.

    ``refresh_before_s`` defaults to ``JITRACE_REFRESH_BEFORE_S`` (60 s). The remaining lifetime is judged by this
    host's clock against the token's ``exp``; a token without ``exp`` is fetched once and kept. Each call's span
    gets ``jit.token.refreshed`` (true when this call replaced a token about to expire).
    """
    if not callable(fetch):
        raise TypeError("refreshing_credentials needs a callable that returns a fresh token")
    if refresh_before_s is not None and refresh_before_s < 0:
        raise ValueError("refresh_before_s must be >= 0")
    return _register(_RefreshingPlugin(fetch, refresh_before_s), "jitrace-refreshing")


def lookup(credentials: object) -> _Plugin | None:
    """jitrace's plugin behind call (or composed channel) credentials, if they carry one."""
    if credentials is None:
        return None
    try:
        return _registry.get(credentials)  # type: ignore[arg-type]
    except TypeError:  # not weak-referenceable: not ours
        return None


def compose(original: Callable[..., object], *parts: object) -> object:
    """``grpc.composite_call_credentials`` / ``composite_channel_credentials`` that remember jitrace's plugin.

    The composed object is new to jitrace; it is registered with the first jitrace plugin among its parts, so the
    interceptor still finds the token (per call, or channel-wide when the channel is made with it).
    """
    composed = original(*parts)
    try:
        plugin = next((p for p in map(lookup, parts) if p is not None), None)
        if plugin is not None:
            _registry[composed] = plugin  # type: ignore[index]
    except Exception:  # noqa: BLE001 - composing credentials must work exactly as without jitrace
        from jitrace.instrumentation import _safety

        _safety.count("credentials")
    return composed
