"""Hostile clock stamps and oversized wire values (issue 7): no crash, no hang, counted, and every string jitrace takes
from the wire is cut to JITRACE_MAX_ATTRIBUTE_CHARS on the span.

Server side on the real sync test server (OTel's interceptor, then jitrace's); every span is also run through the
OTLP encoder, since an attribute the wire format cannot carry (an int beyond int64) would fail a whole export batch.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from helpers import call_metadata, server_span, sync_call
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from plain_service import UNARY

from jitrace.instrumentation import _clock, _safety, _server_call, _settings
from jitrace.instrumentation import contract as c

HOSTILE_STAMPS = ["9" * 20, "9" * 24, "9" * 400, "-1", "-1700000000000000000", "1e18", "0x10", "1_000", " 12",
                  "NaN", "", "²³"]


@pytest.mark.parametrize("stamp", [s for s in HOSTILE_STAMPS if s.isascii()])  # grpc carries ASCII text values
def test_hostile_sent_stamp_is_counted_and_ignored(sync_server: str, exporter: Any, mint: Any, stamp: str) -> None:
    before = _safety.failure_counts().get("bad_clock_stamp", 0)
    md = (*call_metadata(mint()), ("jit-sent-ns", stamp))
    outcome = sync_call(sync_server, UNARY, md)
    assert outcome.code.name == "OK"
    assert c.METADATA_CLOCK not in outcome.trailing  # no echo for a stamp that is not one
    span = server_span(exporter)
    assert c.CLOCK_PEER_SENT_NS not in span.attributes
    assert span.attributes[c.TOKEN_VERDICT] == c.VERDICT_VALID  # the rest of the facts are there
    assert _safety.failure_counts().get("bad_clock_stamp", 0) == before + 1
    encode_spans([span])  # exportable as it is


@given(st.one_of(st.text(max_size=60), st.binary(max_size=60), st.integers().map(str)))
def test_stamp_parser_takes_only_int64_decimals(value: Any) -> None:
    stamp = _server_call._stamp(value)
    if stamp is not None:
        assert 0 <= stamp <= 2**63 - 1
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        assert text.isascii() and text.isdigit()


@given(st.one_of(st.text(max_size=80), st.binary(max_size=80),
                 st.tuples(st.integers(), st.integers()).map(lambda t: f"{t[0]},{t[1]}")))
def test_clock_echo_parser_takes_only_int64_pairs(value: Any) -> None:
    parsed = _clock.parse_clock(value)
    if parsed is not None:
        t2, t3 = parsed
        assert 0 < t2 <= t3 <= 2**63 - 1


@pytest.mark.parametrize("echo", ["-1,5", "1_000,2_000", "+1,+2", f"{2**63},{2**63}", "9" * 30 + ",1", "²,³"])
def test_hostile_clock_echo_is_rejected(echo: str) -> None:
    assert _clock.parse_clock(echo) is None


def test_a_hostile_echo_is_counted_on_the_client() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from jitrace.instrumentation import _client

    span = TracerProvider().get_tracer("t").start_span("c")
    before = _safety.failure_counts().get("bad_clock_echo", 0)
    _client.finish(_client.Pending(span, time.time_ns()), ((c.METADATA_CLOCK, "9" * 30 + ",1"),), None)
    assert _safety.failure_counts().get("bad_clock_echo", 0) == before + 1
    assert c.CLOCK_OFFSET_S not in span.attributes


WIRE_STRINGS = (c.TOKEN_ID, c.TOKEN_SUB, c.TOKEN_ISS, c.TOKEN_AUD, c.GRANT_ID, c.DENIAL_REASON)


@pytest.mark.parametrize("cap", [8, 256])
def test_every_wire_string_is_cut_to_the_cap(sync_server: str, exporter: Any, mint: Any, cap: int) -> None:
    """Claims (jti, sub, iss, aud, grant_id), each far longer than the cap (the denial reason: below)."""
    long = "x" * 600  # five of them keep the token under grpc's 8 KiB metadata limit
    saved = _settings.get()
    _settings.configure(replace(saved, max_attribute_chars=cap))
    try:
        token = mint(jti="j" + long, sub="s" + long, iss="i" + long, aud=["a" + long, "b" + long],
                     grant_id="g" + long)
        sync_call(sync_server, UNARY, call_metadata(token, sent_ns=time.time_ns()))  # denied: bad issuer/audience
        span = server_span(exporter)
        present = [name for name in WIRE_STRINGS if name in span.attributes]
        assert {c.TOKEN_ID, c.TOKEN_SUB, c.TOKEN_ISS, c.TOKEN_AUD, c.GRANT_ID} <= set(present)
        for name in present:
            assert len(span.attributes[name]) <= cap, name
    finally:
        _settings.configure(saved)


def test_denial_reason_is_cut_to_the_cap() -> None:
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2

    from jitrace.instrumentation import _status_details

    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason="R" * 5000, domain="jitrace.lab"))
    value = status_pb2.Status(code=7, details=[detail]).SerializeToString()
    assert _status_details.denial_reason(((_status_details.DETAILS_KEY, value),), 256) == "R" * 256
