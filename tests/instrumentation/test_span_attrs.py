"""jitrace's cheaper attribute setter stores exactly what the SDK's own ``set_attributes`` would, under every limit."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext

from jitrace.instrumentation import _span_attrs

_keys = st.text(alphabet=string.ascii_lowercase + ".", min_size=1, max_size=12)
_values = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                    st.text(max_size=40), st.lists(st.text(max_size=5), max_size=3), st.none(), st.binary(max_size=4))


def _pair(limits: SpanLimits):
    tracer = TracerProvider(span_limits=limits).get_tracer("test")
    sdk, ours = tracer.start_span("sdk"), tracer.start_span("jitrace")
    with trace.use_span(ours):  # its class known as the SDK's own, as on the per-call paths (SDK_SPANS)
        assert _span_attrs.current_span() is ours
    assert type(ours) in _span_attrs.SDK_SPANS
    return sdk, ours


def _same_as_the_sdk(first: dict, second: dict, max_attributes: int | None, max_length: int | None,
                     end_before_second: bool, clean: bool) -> None:
    """Two writes (the second maybe after the span ended) through the SDK and through jitrace: the same outcome."""
    sdk, ours = _pair(SpanLimits(max_span_attributes=max_attributes, max_span_attribute_length=max_length))
    for attrs, ended in ((first, False), (second, end_before_second)):
        if ended:
            sdk.end()
            ours.end()
        sdk.set_attributes(attrs)
        _span_attrs.set_attributes(ours, attrs, clean=clean)
        assert dict(ours.attributes) == dict(sdk.attributes)
        assert ours.dropped_attributes == sdk.dropped_attributes


@settings(max_examples=150, deadline=None)
@given(first=st.dictionaries(_keys, _values, max_size=8), second=st.dictionaries(_keys, _values, max_size=8),
       max_attributes=st.one_of(st.none(), st.integers(1, 10)), max_length=st.one_of(st.none(), st.integers(0, 20)),
       end_before_second=st.booleans())
def test_same_attributes_as_the_sdk(first, second, max_attributes, max_length, end_before_second):
    _same_as_the_sdk(first, second, max_attributes, max_length, end_before_second, clean=False)


_clean_values = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1),
                          st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))


@settings(max_examples=100, deadline=None)
@given(first=st.dictionaries(_keys, _clean_values, max_size=8),
       second=st.dictionaries(_keys, _clean_values, max_size=8),
       max_attributes=st.one_of(st.none(), st.integers(1, 10)), max_length=st.one_of(st.none(), st.integers(0, 20)),
       end_before_second=st.booleans())
def test_clean_dicts_unchecked_store_what_the_sdk_stores(first, second, max_attributes, max_length,
                                                        end_before_second):
    """``clean=True`` (jitrace's own values) skips the per-value check, with the same outcome under every limit."""
    _same_as_the_sdk(first, second, max_attributes, max_length, end_before_second, clean=True)


def test_clean_values_skip_the_sdk_validation(monkeypatch):
    """The point of the module: jitrace's own (clean) values are not walked by the SDK's validator."""
    import opentelemetry.attributes as attributes

    _, span = _pair(SpanLimits())
    walked = []
    original = attributes._clean_attribute_value
    monkeypatch.setattr(attributes, "_clean_attribute_value", lambda *a: walked.append(a) or original(*a))
    _span_attrs.set_attributes(span, {"jit.token.present": True, "jit.token.id": "t-1", "jit.token.exp": 1.5,
                                      "jit.clock.sent_ns": 1_700_000_000_000_000_000})
    assert walked == []
    assert span.attributes["jit.token.id"] == "t-1"


def test_any_other_span_gets_its_own_set_attributes():
    span = NonRecordingSpan(SpanContext(1, 1, False))
    _span_attrs.set_attributes(span, {"jit.token.present": True})  # no error: the API's no-op


@settings(max_examples=100, deadline=None)
@given(base=st.dictionaries(_keys, _clean_values, max_size=8), attrs=st.dictionaries(_keys, _clean_values, max_size=8),
       max_attributes=st.one_of(st.none(), st.integers(1, 10)), max_length=st.one_of(st.none(), st.integers(0, 20)))
def test_a_base_is_stored_first_as_one_merged_write_would(base, attrs, max_attributes, max_length):
    """``base`` (a token's shared facts, not copied) then ``attrs``: what the SDK stores for ``{**base, **attrs}``,
    and ``base`` itself is left as it was."""
    sdk, ours = _pair(SpanLimits(max_span_attributes=max_attributes, max_span_attribute_length=max_length))
    before = dict(base)
    sdk.set_attributes({**base, **attrs})
    _span_attrs.set_attributes(ours, attrs, clean=True, base=base)
    assert dict(ours.attributes) == dict(sdk.attributes)
    assert ours.dropped_attributes == sdk.dropped_attributes
    assert base == before


@settings(max_examples=100, deadline=None)
@given(base=st.one_of(st.none(), st.dictionaries(_keys, _clean_values, max_size=8)),
       first=st.dictionaries(_keys, _clean_values, max_size=8), attrs=st.dictionaries(_keys, _clean_values, max_size=8),
       max_attributes=st.one_of(st.none(), st.integers(1, 10)), max_length=st.one_of(st.none(), st.integers(0, 20)),
       end_before=st.booleans())
def test_set_clean_is_set_attributes_with_clean_values(base, first, attrs, max_attributes, max_length, end_before):
    """``set_clean`` (the per-call paths' form) on a span that already holds attributes, under every limit, and once
    the span has ended: what the SDK stores for ``set_attributes({**base, **attrs})``, and exactly what
    ``set_attributes(..., clean=True, base=base)`` stores, keys in the same order. (A key written again keeps its
    place there, where the SDK moves it last.)"""
    limits = SpanLimits(max_span_attributes=max_attributes, max_span_attribute_length=max_length)
    sdk, ours = _pair(limits)
    _, theirs = _pair(limits)
    for span in (sdk, ours, theirs):
        span.set_attributes(first)
        if end_before:
            span.end()
    before = dict(base or {})
    sdk.set_attributes({**(base or {}), **attrs})
    _span_attrs.set_clean(ours, attrs, base)
    _span_attrs.set_attributes(theirs, attrs, clean=True, base=base)
    assert dict(ours.attributes) == dict(sdk.attributes)
    assert list(ours.attributes.items()) == list(theirs.attributes.items())
    assert ours.dropped_attributes == sdk.dropped_attributes == theirs.dropped_attributes
    assert (base or {}) == before


def test_set_clean_on_any_other_span_goes_through_its_own_set_attributes():
    writes = []

    class Recording(NonRecordingSpan):
        def set_attributes(self, attributes):
            writes.append(dict(attributes))

    _span_attrs.set_clean(Recording(SpanContext(1, 1, False)), {"jit.token.ttl_s": 1.0}, {"jit.token.present": True})
    assert writes == [{"jit.token.present": True, "jit.token.ttl_s": 1.0}]


def test_current_span_is_what_the_api_returns():
    """``current_span`` finds the span ``trace.get_current_span`` finds: none, an SDK span, a non-recording one, and
    not a value of another kind set under the span's key."""
    from opentelemetry import context, trace
    from opentelemetry.trace.propagation import _SPAN_KEY

    assert _span_attrs.current_span() is trace.get_current_span()
    sdk_span = TracerProvider().get_tracer("test").start_span("sdk")
    for span in (sdk_span, trace.NonRecordingSpan(sdk_span.get_span_context()), "not a span", None):
        for _ in range(2):  # the second time through the class already checked
            token = context.attach(context.set_value(_SPAN_KEY, span))
            try:
                assert _span_attrs.current_span() is trace.get_current_span()
            finally:
                context.detach(token)


def test_the_per_call_paths_find_the_span_the_api_finds():
    """``current_context().get(SPAN_KEY)`` is the current span, and only the SDK's own span classes are read field by
    field (``SDK_SPANS``): a subclass with its own ``is_recording`` or ``name`` goes through its methods."""
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import _Span

    class Sampled(_Span):
        def is_recording(self) -> bool:
            return False

    class Renamed(_Span):
        @property
        def name(self) -> str:
            return "renamed"

    sdk_span = TracerProvider().get_tracer("test").start_span("sdk")
    odd = [cls("odd", sdk_span.get_span_context()) for cls in (Sampled, Renamed)]
    for span in (sdk_span, *odd, NonRecordingSpan(sdk_span.get_span_context())):
        token = context.attach(trace.set_span_in_context(span))
        try:
            assert _span_attrs.current_span() is span
            assert _span_attrs.current_context().get(_span_attrs.SPAN_KEY) is span
        finally:
            context.detach(token)
    assert type(sdk_span) in _span_attrs.SDK_SPANS
    assert not {Sampled, Renamed, NonRecordingSpan} & _span_attrs.SDK_SPANS
