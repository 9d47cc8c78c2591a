"""Client side (sync ``grpc``): token facts at send, the clock stamp, and on completion the NTP estimate and the
denial reason, all on OpenTelemetry's client span.

jitrace runs inside OpenTelemetry's interceptor (see ``_hooks``), so OTel's client span is the current span when a
call starts; jitrace keeps a reference to it for the completion, which may come on a gRPC thread (futures, streams).
:class:`JitraceChannel` is what the instrumentor wraps every new sync channel in: it binds its multicallables once
per method and knows jitrace credentials baked into the channel. The pieces shared with the aio interceptors
(:func:`begin`, :func:`finish`) live here too.

Clock stamps are sampled in time: a call carries ``jit-sent-ns`` (and gets the server's ``jit-clock`` echo back) only
when its target has had no stamp for ``JITRACE_CLOCK_STAMP_INTERVAL_S`` (:func:`stamp_due`); every client span still
records ``jit.clock.sent_ns``, and the analyzer bounds each call's offset from its span pair anyway.

Limits: a blocking unary call that carries a clock stamp is made with ``with_call`` (to read the echo); a response
stream is recorded when it ends (iteration over, or its done callback), so a stream the caller abandons has token
facts but no clock estimate or denial reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from jitrace.instrumentation import _clock, _credentials, _safety, _settings, _span_attrs, _status_details, _token
from jitrace.instrumentation import contract as c

STATUS_DETAILS_KEY = _status_details.DETAILS_KEY
_current_context, _SPAN_KEY, _SDK_SPANS = _span_attrs.current_context, _span_attrs.SPAN_KEY, _span_attrs.SDK_SPANS
_finish_lock = threading.Lock()

# When each target's next clock stamp is due (monotonic ns): one schedule per target for all its channels, so that
# a process making a channel per call still stamps at most once per interval. Bounded: emptied when full (a process
# talking to that many targets just stamps a few calls more).
_TARGETS_MAX = 4096
_next_stamp: dict[object, int] = {}
_stamp_lock = threading.Lock()


def stamp_due(target: object, interval_s: float) -> bool:
    """True when a call to ``target`` should carry a clock stamp now (and then not again for ``interval_s``)."""
    if not interval_s > 0:  # 0 (or a value that is not a positive number): every call
        return True
    now = time.monotonic_ns()
    if now < _next_stamp.get(target, 0):
        return False
    with _stamp_lock:
        if now < _next_stamp.get(target, 0):  # another thread took this interval's stamp meanwhile
            return False
        if len(_next_stamp) >= _TARGETS_MAX:
            _next_stamp.clear()
        _next_stamp[target] = now + int(interval_s * 1e9)
    return True

Metadata = Sequence[tuple[str, str | bytes]]


@dataclass(slots=True)
class Pending:
    """One call in flight: its span and the clock stamp it carried (None: it carried none)."""

    span: trace.Span
    sent_ns: int | None
    finished: bool = False


Started = tuple[trace.Span, int | None, list[tuple[str, Any]] | None]


def begin(metadata: Metadata | None, credentials: object, method: str | None = None, channel_plugin: Any = None,
          target: object = None) -> Started | None:
    """Record the facts at send on the current client span.

    Returns ``(span, stamp, metadata)``: the span recorded on, the clock stamp the call carries (None: none) and the
    metadata to send instead (None: send the caller's own); or None when there is no client span to record on (then
    the call goes out untouched). A call that records its reply makes its :class:`Pending` from the first two.
    ``channel_plugin``: the jitrace credentials the channel was made with, if any; ``target``: whose clock-stamp
    schedule the call follows (the channel's target).
    """
    # Only OpenTelemetry's client span of this very call (named after its method): anything else current here
    # (the caller's own span, when OpenTelemetry skips a call it filters out) is not ours to annotate.
    span = _current_context().get(_SPAN_KEY)
    if type(span) in _SDK_SPANS:  # the SDK's span: its fields read, not its properties (see _span_attrs)
        if span._end_time is not None or span._kind is not SpanKind.CLIENT or (  # noqa: SLF001
                method is not None and span._name != method):  # noqa: SLF001
            return None
    else:
        span = _span_attrs.current_span()
        if not span.is_recording() or getattr(span, "kind", None) is not SpanKind.CLIENT or (
                method is not None and getattr(span, "name", method) != method):
            return None
    now_ns = time.time_ns()  # when the call leaves: the stamp, and the token's age and ttl
    settings = _settings._current  # noqa: SLF001 - see _settings
    # per-call credentials first, then the channel's
    plugin = channel_plugin if credentials is None else _credentials.lookup(credentials) or channel_plugin
    static: Mapping[str, Any] | None = None  # a token's shared facts (written without a copy)
    if plugin is None:
        static, attrs = _token.ABSENT_FACTS, {}
        key = settings.token_metadata_key
        for k, v in metadata or ():
            if k == key or k.lower() == key:  # the token's entry (the first; _token.metadata_value, inline)
                last = _token.last_value[0]  # the value looked up last (_token.value_facts's first step, inline)
                _, static, iat, exp = last[2] if last[0] is settings and last[1] == v else _token.value_facts(v)
                # its age and ttl as the call leaves (_token.aged, inline)
                if iat is not None:
                    attrs[c.TOKEN_AGE_S] = now_ns / 1e9 - iat
                if exp is not None:
                    attrs[c.TOKEN_TTL_S] = exp - now_ns / 1e9
                break
    else:
        attrs = _credentials_facts(plugin, metadata, settings, now_ns)
    stamp = new_metadata = None
    if settings.clock_stamps:
        attrs[c.CLOCK_SENT_NS] = now_ns
        # most calls fall inside their target's interval: one look-up decides, stamp_due only for the others
        interval = settings.clock_stamp_interval_s
        if (not interval > 0 or time.monotonic_ns() >= _next_stamp.get(target, 0)) and stamp_due(target, interval) \
                and not any(k == c.METADATA_SENT_NS for k, _ in (metadata or ())):
            stamp = now_ns
            new_metadata = [*(metadata or ()), (c.METADATA_SENT_NS, str(now_ns))]
    _span_attrs.set_clean(span, attrs, static)
    return span, stamp, new_metadata


def _credentials_facts(plugin: Any, metadata: Metadata | None, settings: _settings.Settings,
                       now_ns: int) -> dict[str, Any]:
    """The token facts of a call whose token jitrace's credentials decide (and whether they refreshed it)."""
    token: str | None = None
    refreshed: bool | None = None
    with _safety.guard("credentials"):
        token, refreshed = plugin.prepare()
        if token is None:
            token = _token.token_from_metadata(metadata, settings.token_metadata_key)
        attrs = _token.token_facts(token, now_ns / 1e9)
        if refreshed is not None:
            attrs[c.TOKEN_REFRESHED] = bool(refreshed)
        return attrs
    return {}  # a failed prepare leaves the token unknown, not absent


def replied(pending: Pending, code: grpc.StatusCode | None) -> bool:
    """Whether the reply's trailing metadata can hold anything to record: the echo of a stamped call, or the
    details of a failed one. Otherwise :func:`finish` has nothing to read (most calls)."""
    return pending.sent_ns is not None or (code is not None and code is not grpc.StatusCode.OK)


def finish(pending: Pending, trailing_metadata: Metadata | None, code: grpc.StatusCode | None) -> None:
    """Record what the reply says: the NTP estimate from ``jit-clock`` and the denial reason. Once per call."""
    t4 = time.time_ns()
    with _finish_lock:
        if pending.finished:
            return
        pending.finished = True
    if not replied(pending, code):
        return
    attrs: dict[str, Any] = {}
    for key, value in trailing_metadata or ():
        if key == c.METADATA_CLOCK and pending.sent_ns is not None and c.CLOCK_OFFSET_S not in attrs:
            stamps = _clock.parse_clock(value)
            if stamps is not None:
                attrs[c.CLOCK_OFFSET_S], attrs[c.CLOCK_DELAY_S] = _clock.ntp(pending.sent_ns, *stamps, t4)
            else:
                _safety.count("bad_clock_echo")  # not a reply of jitrace's: no estimate, counted
        elif key == STATUS_DETAILS_KEY and code is not None and code is not grpc.StatusCode.OK:
            reason = _status_details.reason_of(value, _settings.get().max_attribute_chars)
            if reason:
                attrs[c.DENIAL_REASON] = reason
            else:
                _safety.count("unread_status_details")  # no ErrorInfo reason, or not a status: nothing recorded
    if attrs:
        _span_attrs.set_attributes(pending.span, attrs, clean=True)


def _finish_call(pending: Pending, call: Any) -> None:
    """Done-callback form of :func:`finish` for a sync call, future or stream; never raises (failures counted)."""
    try:  # rather than _safety.guarded: one function call less on every call
        code = call.code()
        finish(pending, call.trailing_metadata() if replied(pending, code) else None, code)
    except Exception:  # noqa: BLE001 - nothing of ours may fail a call
        _safety.count("client_interceptor")


class _StreamCall(grpc.Call, grpc.Future):
    """A response stream, unchanged for the caller, that records the reply when it ends.

    It finishes on the caller's thread when iteration ends (before OpenTelemetry's stream wrapper ends its span)
    and in a done callback registered before anyone else's (OpenTelemetry ends a stream-stream span in one).
    """

    def __init__(self, call: Any, pending: Pending) -> None:
        self._call = call
        self._pending = pending
        call.add_done_callback(self._on_done)

    def _on_done(self, _call: Any = None) -> None:
        _finish_call(self._pending, self._call)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except (StopIteration, grpc.RpcError):
            self._on_done()
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)

    # grpc.Call / grpc.Future: delegated
    def initial_metadata(self) -> Any:
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata()

    def code(self) -> Any:
        return self._call.code()

    def details(self) -> Any:
        return self._call.details()

    def is_active(self) -> Any:
        return self._call.is_active()

    def time_remaining(self) -> Any:
        return self._call.time_remaining()

    def cancel(self) -> Any:
        return self._call.cancel()

    def add_callback(self, callback: Callable[[], None]) -> Any:
        return self._call.add_callback(callback)

    def cancelled(self) -> Any:
        return self._call.cancelled()

    def running(self) -> Any:
        return self._call.running()

    def done(self) -> Any:
        return self._call.done()

    def result(self, timeout: float | None = None) -> Any:
        return self._call.result(timeout)

    def exception(self, timeout: float | None = None) -> Any:
        return self._call.exception(timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        return self._call.traceback(timeout)

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._call.add_done_callback(lambda _call: fn(self))


# --- the channel wrapper the instrumentor uses -----------------------------------------------------------------------
# Not a grpc.intercept_channel interceptor: that builds a new multicallable and call-details object per call, where
# jitrace's wrapper binds its multicallables once per method and calls grpc directly.
def _start(metadata: Metadata | None, credentials: object, method: str, channel_plugin: Any,
           target: object) -> tuple[Pending | None, Metadata | None]:
    try:
        started = begin(metadata, credentials, method, channel_plugin, target)
    except Exception:  # noqa: BLE001 - nothing of ours may fail a call
        _safety.count("client_interceptor")
        return None, metadata
    if started is None:
        return None, metadata
    span, stamp, new_metadata = started
    return Pending(span, stamp), metadata if new_metadata is None else new_metadata


class _Multicallable:
    """One method of a :class:`JitraceChannel`: grpc's multicallable (``base``) and what jitrace's calls need."""

    __slots__ = ("_base", "_method", "_plugin", "_target")

    def __init__(self, base: Any, method: str, plugin: Any, target: object) -> None:
        self._base = base
        self._method = method
        self._plugin = plugin
        self._target = target


class _UnaryResponse(_Multicallable):
    """Unary-unary or stream-unary: ``__call__``, ``with_call`` and ``future``."""

    __slots__ = ()

    def with_call(self, request: Any, timeout: float | None = None, metadata: Metadata | None = None,
                  credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        pending, metadata = _start(metadata, credentials, self._method, self._plugin, self._target)
        if pending is None:
            return self._base.with_call(request, timeout, metadata, credentials, wait_for_ready, compression)
        return self._recorded(pending, request, timeout, metadata, credentials, wait_for_ready, compression)

    def __call__(self, request: Any, timeout: float | None = None, metadata: Metadata | None = None,
                 credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        try:  # _start, inline: the blocking unary call is the most common
            started = begin(metadata, credentials, self._method, self._plugin, self._target)
        except Exception:  # noqa: BLE001 - nothing of ours may fail a call
            _safety.count("client_interceptor")
            started = None
        if started is None:
            return self._base(request, timeout, metadata, credentials, wait_for_ready, compression)
        span, stamp, new_metadata = started
        if new_metadata is not None:
            metadata = new_metadata
        if stamp is None:
            # no clock stamp: a reply that succeeds has nothing to record, and a failure raises with its trailing
            # metadata, so grpc's plain call does (with_call would build a call object for nothing); the pending
            # call is made only for a failure
            try:
                return self._base(request, timeout, metadata, credentials, wait_for_ready, compression)
            except grpc.RpcError as error:
                _finish_call(Pending(span, None), error)
                raise
        return self._recorded(Pending(span, stamp), request, timeout, metadata, credentials, wait_for_ready,
                              compression)[0]

    def _recorded(self, pending: Pending, *args: Any) -> tuple[Any, Any]:
        """``with_call`` on the base, recording the outcome (the call object carries the trailing metadata)."""
        try:
            response, call = self._base.with_call(*args)
        except grpc.RpcError as error:
            _finish_call(pending, error)
            raise
        _finish_call(pending, call)
        return response, call

    def future(self, request: Any, timeout: float | None = None, metadata: Metadata | None = None,
               credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        pending, metadata = _start(metadata, credentials, self._method, self._plugin, self._target)
        future = self._base.future(request, timeout, metadata, credentials, wait_for_ready, compression)
        if pending is not None:
            with _safety.guard("client_interceptor"):
                future.add_done_callback(lambda call: _finish_call(pending, call))
        return future


class _StreamResponse(_Multicallable):
    """Unary-stream or stream-stream: the response iterator, recorded when it ends."""

    __slots__ = ()

    def __call__(self, request: Any, timeout: float | None = None, metadata: Metadata | None = None,
                 credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        pending, metadata = _start(metadata, credentials, self._method, self._plugin, self._target)
        call = self._base(request, timeout, metadata, credentials, wait_for_ready, compression)
        if pending is not None:
            with _safety.guard("client_interceptor"):
                return _StreamCall(call, pending)
        return call


class JitraceChannel(grpc.Channel):
    """A channel whose calls record jitrace's client facts (what the instrumentor wraps every new channel in)."""

    def __init__(self, channel: grpc.Channel, channel_credentials: object = None, target: str | None = None) -> None:
        self._channel = channel
        self._plugin = _credentials.lookup(channel_credentials)  # jitrace credentials baked into the channel
        self._target = target if target is not None else self  # whose clock-stamp schedule its calls follow

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._channel.subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._channel.unsubscribe(callback)

    def _base(self, kind: str, method: str, request_serializer: Any, response_deserializer: Any,
              _registered_method: Any) -> Any:
        factory = getattr(self._channel, kind)
        if _registered_method:
            return factory(method, request_serializer, response_deserializer, _registered_method)
        return factory(method, request_serializer, response_deserializer)

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    _registered_method: Any = False) -> Any:
        base = self._base("unary_unary", method, request_serializer, response_deserializer, _registered_method)
        return _UnaryResponse(base, method, self._plugin, self._target)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: Any = False) -> Any:
        base = self._base("stream_unary", method, request_serializer, response_deserializer, _registered_method)
        return _UnaryResponse(base, method, self._plugin, self._target)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: Any = False) -> Any:
        base = self._base("unary_stream", method, request_serializer, response_deserializer, _registered_method)
        return _StreamResponse(base, method, self._plugin, self._target)

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                      _registered_method: Any = False) -> Any:
        base = self._base("stream_stream", method, request_serializer, response_deserializer, _registered_method)
        return _StreamResponse(base, method, self._plugin, self._target)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> JitraceChannel:
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
        self._channel.__exit__(exc_type, exc_val, exc_tb)
        return False

