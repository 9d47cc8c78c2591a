"""The server side's core, shared by the sync (:mod:`._server`) and grpc.aio (:mod:`._aio_server`) interceptors.

What one server call is to jitrace (:class:`ServerCall`: the facts, the ``jit-clock`` echo, the denial reason), how a
handler is wrapped once and its behaviour run with that call current (:func:`wrap_handler`, :func:`wrap_sync`, also
what a sync handler on a grpc.aio server runs), and :class:`Forwarding`, the methods both kinds of handler context
forward to the context they wrap. The interceptors add only what differs: the context's ``abort`` and the aio
handlers' coroutines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry.trace import Span

from jitrace.instrumentation import _call_state, _safety, _settings, _span_attrs, _status_details, _token
from jitrace.instrumentation import contract as c
from jitrace.instrumentation._settings import Settings

Metadata = Sequence[tuple[str, str | bytes]]
_NO_TOKEN: _token.ValueFacts = (None, _token.ABSENT_FACTS, None, None)  # type: ignore[assignment]
_current_context, _SPAN_KEY, _SDK_SPANS = _span_attrs.current_context, _span_attrs.SPAN_KEY, _span_attrs.SDK_SPANS
_MAX_STAMP_CHARS = 24  # a nanosecond stamp has 19 digits; anything longer is not one
_MAX_STAMP = 2**63 - 1  # span attributes are int64 on the wire (OTLP): a larger int would fail the whole export


def _stamp(value: str | bytes | None) -> int | None:
    """A ``jit-sent-ns`` value as an int; None (counted: ``bad_clock_stamp``) unless it is a plain ASCII decimal that
    fits an int64. Never raises."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    # isascii: str.isdigit accepts digits int() refuses (e.g. superscripts)
    if (isinstance(value, str) and len(value) <= _MAX_STAMP_CHARS and value.isascii() and value.isdigit()
            and (stamp := int(value)) <= _MAX_STAMP):
        return stamp
    _safety.count("bad_clock_stamp")
    return None


class ServerCall(_call_state.CallState):
    """jitrace's view of one server call, and the state its hooks find (one object): created when the handler is
    invoked, finished when the reply leaves.

    Its facts are written once, when the reply leaves (:meth:`flush`): the token's (age and ttl at its first check,
    else at arrival), the clock stamps, the first check's verdict and wait, the denial reason; one call into the
    SDK per call. Anything else that writes to the span during the call (a policy decision) flushes them first,
    so the order of the writes is the order of the facts.
    """

    __slots__ = ("metadata", "echo", "peer_sent_ns", "first_check", "_arrival_s", "_unwritten", "_finished",
                 "_token_facts")
    defers = True

    @classmethod
    def begin(cls, metadata: Metadata | None, settings: Settings) -> ServerCall:
        now_ns = time.time_ns()
        span: Any = _current_context().get(_SPAN_KEY)
        if type(span) in _SDK_SPANS:  # the SDK's span: its fields read, not its properties (see _span_attrs)
            start, recording = span._start_time, span._end_time is None  # noqa: SLF001
        else:
            span = _span_attrs.current_span()
            start, recording = getattr(span, "start_time", None), span.is_recording()
        arrival_ns = start if isinstance(start, int) and start > 0 else now_ns
        # one pass over the metadata for both values (the first of each); grpc hands servers lowercase keys
        key = settings.token_metadata_key
        sent_raw = token_raw = None
        for k, v in metadata or ():
            if k == key:
                if token_raw is None:
                    token_raw = v
            elif k == c.METADATA_SENT_NS and sent_raw is None:
                sent_raw = v
        if token_raw is None:
            token, static, iat, exp = _NO_TOKEN
        else:  # the value looked up last (_token.value_facts's first step, inline), else a look-up
            last = _token.last_value[0]
            token, static, iat, exp = last[2] if last[0] is settings and last[1] == token_raw else \
                _token.value_facts(token_raw)
        call = cls(span, arrival_ns, token, iat, exp)
        call._token_facts = static  # the token's shared facts (age and ttl from token_iat and token_exp)
        call.metadata = metadata  # what the call arrived with, for the handler's context to hand out again
        call.peer_sent_ns = _stamp(sent_raw) if sent_raw is not None else None
        call.echo = call.peer_sent_ns is not None and settings.clock_stamps  # the client stamped: echo jit-clock
        call.first_check = None
        call._arrival_s = now_ns / 1e9
        call._unwritten = recording  # a sampled-out call still gets its echo, but no facts are worked out
        call._finished = False
        return call

    def flush(self, extra: dict[str, Any] | None = None) -> None:
        """Write what is kept for the span, with ``extra`` (jitrace's own clean values), in one call into the SDK."""
        attrs: dict[str, Any] | None = None
        static: Mapping[str, Any] | None = None  # the token's shared facts (written without a copy)
        check = self.first_check
        token = self.metadata_token
        if self._unwritten:  # the facts from arrival
            self._unwritten = False
            # the token from metadata checked: its age and ttl at the check (else at arrival; _token.aged, inline)
            at_s = check[1] if check is not None and check[2] else self._arrival_s
            static, attrs = self._token_facts, {}
            if self.token_iat is not None:
                attrs[c.TOKEN_AGE_S] = at_s - self.token_iat
            if self.token_exp is not None:
                attrs[c.TOKEN_TTL_S] = self.token_exp - at_s
            attrs[c.CLOCK_RECEIVED_NS] = self.arrival_ns
            if self.peer_sent_ns is not None:
                attrs[c.CLOCK_PEER_SENT_NS] = self.peer_sent_ns
            if not token:
                attrs[c.TOKEN_VERDICT] = c.VERDICT_MISSING
        if check is not None:
            self.first_check = None
            verdict, at_s, same, checked, wait_s = check
            if attrs is None:
                attrs = {}
                if same:  # the arrival facts are on the span already: only the age and ttl at the check
                    attrs.update(_token.aged(self.token_iat, self.token_exp, at_s))
            if not same:  # another token than the metadata's: its facts over those
                attrs.update(_token.token_facts(checked, at_s))
            attrs[c.TOKEN_VERDICT] = verdict
            if wait_s is not None:  # the call's first access check
                attrs[c.AUTH_WAIT_S] = wait_s
        if extra:
            attrs = extra if attrs is None else {**attrs, **extra}
        if attrs:
            _span_attrs.set_clean(self.span, attrs, static)

    def trailing(self, metadata: Metadata | None) -> tuple[tuple[str, str | bytes], ...] | None:
        """The reply's trailing metadata: ``metadata`` plus the ``jit-clock`` echo; records the denial reason and
        writes the call's facts.

        Returns None when there is nothing to change (no echo asked for). Called once per call; later calls (an
        abort already handled) return None.
        """
        if self._finished:
            return None
        self._finished = True
        reason = _status_details.denial_reason(metadata, _settings._current.max_attribute_chars) if metadata else None  # noqa: SLF001
        self.flush(None if reason is None else {c.DENIAL_REASON: reason})
        if not self.echo:
            return None
        kept = tuple((k, v) for k, v in (metadata or ()) if k != c.METADATA_CLOCK)
        return (*kept, (c.METADATA_CLOCK, f"{self.arrival_ns},{time.time_ns()}"))


def set_status_code(span: Span, code: object) -> None:
    """``rpc.grpc.status_code`` for a status OpenTelemetry's context wrapper did not see (``abort_with_status``)."""
    if isinstance(code, grpc.StatusCode):
        span.set_attribute(c.RPC_GRPC_STATUS_CODE, code.value[0])


Wrap = Callable[[Callable[..., Any], bool], Callable[..., Any]]
# Wrapped handlers, built once per (handler, wrap): a server's handlers are the same objects call after call, and
# rebuilding the wrapper per call costs on every call. Keyed by identity, holding the handler so its id stays its own;
# bounded (a server that makes a new handler per call just fills and empties it).
_WRAPPED_MAX = 1024
_wrapped: dict[Wrap, dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]]] = {}


def handler_cache(wrap: Wrap) -> dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]]:
    """The cache :func:`wrap_handler` keeps for ``wrap``: id(handler) -> (handler, wrapped)."""
    return _wrapped.setdefault(wrap, {})


def wrap_handler(handler: grpc.RpcMethodHandler | None, wrap: Wrap) -> grpc.RpcMethodHandler | None:
    """``handler`` with its behaviour replaced by ``wrap(behaviour, response_streaming)``; same shape, serializers."""
    if handler is None:
        return None
    cache = _wrapped.setdefault(wrap, {})
    hit = cache.get(id(handler))
    if hit is not None and hit[0] is handler:
        return hit[1]
    wrapped = _build(handler, wrap)
    if len(cache) >= _WRAPPED_MAX:
        cache.clear()
    cache[id(handler)] = (handler, wrapped)
    return wrapped


def _build(handler: grpc.RpcMethodHandler, wrap: Wrap) -> grpc.RpcMethodHandler:
    if handler.request_streaming and handler.response_streaming:
        behavior, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    return factory(wrap(behavior, handler.response_streaming), request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)



class Forwarding:
    """What the sync and the grpc.aio handler contexts share: each method forwards to the context wrapped (the
    OpenTelemetry wrapper's, as OpenTelemetry's own wrapper forwards to grpc's); anything else is looked up there.
    Mixed in before grpc's abstract context class, whose methods it supplies."""

    __slots__ = ()
    _context: Any
    touched = True  # whether the handler may have set trailing metadata (see the sync context)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return self._context.peer()

    def peer_identities(self) -> Any:
        return self._context.peer_identities()

    def peer_identity_key(self) -> Any:
        return self._context.peer_identity_key()

    def auth_context(self) -> Any:
        return self._context.auth_context()

    def set_compression(self, compression: grpc.Compression) -> None:
        return self._context.set_compression(compression)

    def send_initial_metadata(self, initial_metadata: Metadata) -> Any:
        return self._context.send_initial_metadata(initial_metadata)

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        return self._context.set_trailing_metadata(trailing_metadata)

    def trailing_metadata(self) -> Any:
        return self._context.trailing_metadata()

    def set_code(self, code: grpc.StatusCode) -> None:
        return self._context.set_code(code)

    def set_details(self, details: str) -> None:
        return self._context.set_details(details)

    def code(self) -> Any:
        return self._context.code()

    def details(self) -> Any:
        return self._context.details()

    def disable_next_message_compression(self) -> None:
        return self._context.disable_next_message_compression()

    def time_remaining(self) -> Any:
        return self._context.time_remaining()


ContextWrapper = Callable[[Any, ServerCall], Any]
# _call_state.activate and deactivate, without their call (they run on every server call)
_activate = _call_state._current.set  # noqa: SLF001
_reset = _call_state._current.reset  # noqa: SLF001


def start(context: Any, wrap_context: ContextWrapper) -> tuple[ServerCall | None, Any, Any]:
    """A call's handler is invoked: its :class:`ServerCall` made current, and the context the handler gets
    (``wrap_context(context, call)``). ``(None, None, context)`` when jitrace is off or could not start (counted)."""
    try:
        settings = _settings._current  # noqa: SLF001 - see _settings
        if settings.enabled:
            call = ServerCall.begin(context.invocation_metadata(), settings)
            return call, _activate(call), wrap_context(context, call)
    except Exception:  # noqa: BLE001 - nothing of ours may fail a call
        _safety.count("server_interceptor")
    return None, None, context


def finish(call: ServerCall, context: Any, token: Any) -> None:
    """The reply leaves: the echo merged into the trailing metadata, and the call's state no longer current.

    The trailing metadata is read back only from a context the handler ``touched`` (set it, or aborted)."""
    try:
        trailing = call.trailing(context.trailing_metadata() if getattr(context, "touched", True) else None)
        if trailing is not None:
            context.set_trailing_metadata(trailing)
    except Exception:  # noqa: BLE001
        _safety.count("server_interceptor")
    try:
        _reset(token)
    except ValueError:  # a response generator closed from another context: _call_state.deactivate's case
        _call_state.deactivate(token)


def wrap_sync(behavior: Callable[..., Any], response_streaming: bool,
              wrap_context: ContextWrapper) -> Callable[..., Any]:
    """A sync behaviour wrapped: jitrace's work runs inside the handler invocation (on its thread-pool thread, with
    the context ``wrap_context`` makes: a sync server's, or a sync handler's on a grpc.aio server)."""
    if response_streaming:
        def stream(request: Any, context: Any) -> Iterator[Any]:
            call, token, ctx = start(context, wrap_context)
            if call is None:
                yield from behavior(request, context)
                return
            try:
                yield from behavior(request, ctx)
            finally:
                finish(call, ctx, token)

        return stream

    def unary(request: Any, context: Any) -> Any:
        try:  # start(), inline: the unary call is the most common
            settings = _settings._current  # noqa: SLF001 - see _settings
            call = ServerCall.begin(context.invocation_metadata(), settings) if settings.enabled else None
            if call is not None:
                token, ctx = _activate(call), wrap_context(context, call)
        except Exception:  # noqa: BLE001 - nothing of ours may fail a call
            _safety.count("server_interceptor")
            call = None
        if call is None:
            return behavior(request, context)
        try:
            return behavior(request, ctx)
        finally:
            finish(call, ctx, token)

    return unary
