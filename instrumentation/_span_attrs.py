"""Setting jitrace's attributes on a span: the SDK's ``set_attributes`` result, at a fraction of its cost (and the
current span, as ``trace.get_current_span`` finds it, in fewer calls: :func:`current_span`, or none on the per-call
paths: :data:`current_context` and :data:`SDK_SPANS`).

The SDK validates every value it is given (a recursive type walk per attribute, under two locks): for the 15-20
attributes jitrace sets per call that was about a third of jitrace's cost per call. jitrace's values are already
clean by construction (str, bool, int, float; strings cut to ``JITRACE_MAX_ATTRIBUTE_CHARS``), so for the SDK's own
``Span`` with its own ``BoundedAttributes`` they are stored the way the SDK stores clean values, honouring the same
rules: nothing on an ended span, the span's attribute-count and value-length limits. Anything else (another SDK, a
span limit that would apply, a value of another type) goes through ``span.set_attributes`` unchanged.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

try:  # the SDK's own classes: only their instances take the direct path
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.trace import Span as SdkSpan
except ImportError:  # pragma: no cover - the SDK is a dependency, but an API-only process must still work
    BoundedAttributes = SdkSpan = None  # type: ignore[assignment,misc]

try:  # the context key the API keeps the current span under
    from opentelemetry.trace.propagation import _SPAN_KEY
except ImportError:  # pragma: no cover - another API version: trace.get_current_span only
    _SPAN_KEY = None
try:
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
except ImportError:  # pragma: no cover
    ContextVarsRuntimeContext = None  # type: ignore[assignment,misc]
_SPAN_TYPES: set[type] = set()  # classes of spans trace.get_current_span has returned as they were
# Of those, the SDK's own span classes (``sdk.trace.Span`` with its own name, kind, start_time, is_recording and
# set_attributes): the per-call paths read such a span's fields (``_name``, ``_kind``, ``_start_time``,
# ``_end_time``) where the properties would each be a call.
SDK_SPANS: set[type] = set()
_SDK_OWN = ("name", "kind", "start_time", "is_recording", "set_attributes")
SPAN_KEY: Any = _SPAN_KEY if _SPAN_KEY is not None else object()  # a key no context holds: current_span decides


def _context_getter() -> Any:
    """``opentelemetry.context.get_current`` without its two calls: the runtime context's own ``ContextVar.get`` when
    it is the API's default (contextvars) runtime context, else the API's function."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if ContextVarsRuntimeContext is not None and type(runtime) is ContextVarsRuntimeContext and \
            isinstance(var, contextvars.ContextVar):
        return var.get
    return otel_context.get_current


# The current context, in no Python call: ``current_context().get(SPAN_KEY)`` is the current span when its class is
# in SDK_SPANS (else :func:`current_span` decides).
current_context = _context_getter()

_CLEAN = (bool, int, float)
# The SDK's spans are instances of a private subclass of ``sdk.trace.Span``: what matters is that they store
# attributes with Span.set_attributes itself.
_SDK_SET = getattr(SdkSpan, "set_attributes", object())


def current_span() -> Any:
    """``trace.get_current_span()``: the current context's span, in two calls rather than five. The API checks the
    value against its abstract ``Span`` (a Python-level ``isinstance`` each time); here that is done once per class
    of span, through the API's own function."""
    if _SPAN_KEY is not None:
        span = otel_context.get_current().get(_SPAN_KEY)
        if type(span) in _SPAN_TYPES:
            return span
        found = trace.get_current_span()
        if found is span and len(_SPAN_TYPES) < 16:
            kind = type(span)
            _SPAN_TYPES.add(kind)
            if SdkSpan is not None and issubclass(kind, SdkSpan) and \
                    all(getattr(kind, name, None) is getattr(SdkSpan, name) for name in _SDK_OWN):
                SDK_SPANS.add(kind)
        return found
    return trace.get_current_span()


def set_attributes(span: Any, attrs: Mapping[str, Any], *, clean: bool = False,
                   base: Mapping[str, Any] | None = None) -> None:
    """``span.set_attributes({**base, **attrs})``; same outcome, cheaper for an SDK span (see the module's docstring).

    ``clean``: the caller vouches that ``attrs`` and ``base`` hold only non-empty str keys and str, bool, int or
    finite float values (what jitrace builds from parsed and capped facts: :func:`._token.token_facts`, stamps,
    verdicts); the per-value check is then skipped unless the span has a value-length limit. ``base``: attributes
    written first (a token's shared facts, stored without being copied)."""
    if clean and type(span) in SDK_SPANS:  # jitrace's own facts on the SDK's span (the per-call case): in short
        bounded = span._attributes  # noqa: SLF001 - see the module docstring
        if type(bounded) is BoundedAttributes and bounded.max_value_len is None and (
                bounded.maxlen is None or len(bounded._dict) + len(attrs) + (len(base) if base else 0)  # noqa: SLF001
                <= bounded.maxlen):
            # Under the span's lock, which every SDK write of a span's attributes holds (set_attribute,
            # set_attributes) and end() too: so nothing is written after the span ended, and no write of the SDK's
            # runs meanwhile. BoundedAttributes' own lock is not taken: what it guards besides (eviction and its
            # count) does not happen here, and each update is one step of C that no reader can see half done.
            # acquire/release rather than ``with``: the same, in fewer steps (this runs twice per call).
            lock = span._lock  # noqa: SLF001
            lock.acquire()
            try:
                if span._end_time is None and not bounded._immutable:  # noqa: SLF001
                    if base:
                        bounded._dict.update(base)  # noqa: SLF001
                    bounded._dict.update(attrs)  # noqa: SLF001
                    return
            finally:
                lock.release()
    if getattr(type(span), "set_attributes", None) is not _SDK_SET or not (attrs or base):
        _sdk_set(span, attrs, base)  # not the SDK's span (or one that overrides it): its own rules
        return
    try:
        bounded = span._attributes  # noqa: SLF001 - see the module docstring
        lock = span._lock  # noqa: SLF001
        if type(bounded) is not BoundedAttributes or bounded._immutable:  # noqa: SLF001
            raise TypeError
        stored = bounded._dict  # noqa: SLF001
        max_value_len = bounded.max_value_len
    except (AttributeError, TypeError):
        _sdk_set(span, attrs, base)
        return
    if not clean or max_value_len is not None:
        # only values the SDK would store as they are (inline: this runs a few times per call)
        for key, value in (*(base or {}).items(), *attrs.items()):
            kind = type(value)
            if type(key) is not str or not key or (
                    kind is not str and kind not in _CLEAN) or (
                    kind is str and max_value_len is not None and len(value) > max_value_len):
                _sdk_set(span, attrs, base)
                return
    maxlen = bounded.maxlen
    if maxlen is not None and len(stored) + len(attrs) + (len(base) if base else 0) > maxlen:
        _sdk_set(span, attrs, base)  # the SDK's eviction rules apply: let it do that
        return
    with lock:
        if span._end_time is not None:  # noqa: SLF001 - the SDK ignores (and warns about) writes to an ended span
            _sdk_set(span, attrs, base)
            return
        with bounded._lock:  # noqa: SLF001
            if base:
                stored.update(base)
            stored.update(attrs)


def set_clean(span: Any, attrs: Mapping[str, Any], base: Mapping[str, Any] | None) -> None:
    """``set_attributes(span, attrs, clean=True, base=base)``, its per-call case first (the SDK's span, no value
    limit, room for them all): the same outcome in fewer steps, for the per-call paths."""
    if type(span) in SDK_SPANS:
        bounded = span._attributes  # noqa: SLF001 - see the module docstring
        if type(bounded) is BoundedAttributes and bounded.max_value_len is None and (
                bounded.maxlen is None or len(bounded._dict) + len(attrs) + (len(base) if base else 0)  # noqa: SLF001
                <= bounded.maxlen):
            lock = span._lock  # noqa: SLF001 - as in set_attributes
            lock.acquire()
            try:
                if span._end_time is None and not bounded._immutable:  # noqa: SLF001
                    stored = bounded._dict  # noqa: SLF001
                    if base:
                        stored.update(base)
                    stored.update(attrs)
                    return
            finally:
                lock.release()
    set_attributes(span, attrs, clean=True, base=base)


def _sdk_set(span: Any, attrs: Mapping[str, Any], base: Mapping[str, Any] | None) -> None:
    span.set_attributes({**base, **attrs} if base else attrs)
