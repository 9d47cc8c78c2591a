"""Clock stamps sampled in time: ``jit-sent-ns`` on at most one call per target per
``JITRACE_CLOCK_STAMP_INTERVAL_S``, and the ``jit-clock`` echo only on those calls; over the real plain service
(sync and aio clients), with the schedule itself and the setting's parsing."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import plain_service as svc
import pytest
from helpers import bearer, call_aio, call_sync, client_span, mint, spans_of, traced, traced_async
from opentelemetry.trace import SpanKind

from jitrace.instrumentation import _client, _settings
from jitrace.instrumentation import contract as c
from jitrace.instrumentation._settings import Settings

INTERVAL = "JITRACE_CLOCK_STAMP_INTERVAL_S"


# --- the setting ------------------------------------------------------------------------------------------------
def test_the_default_interval_is_one_second() -> None:
    assert Settings().clock_stamp_interval_s == 1.0
    assert Settings.from_env({}).clock_stamp_interval_s == 1.0


@pytest.mark.parametrize(("raw", "expected"), [("0", 0.0), ("2.5", 2.5), (" 0.25 ", 0.25), ("30", 30.0)])
def test_the_interval_from_the_environment(raw: str, expected: float) -> None:
    assert Settings.from_env({INTERVAL: raw}).clock_stamp_interval_s == expected


@pytest.mark.parametrize("raw", ["abc", "-1", "-0.5", "nan", "inf", "", "1s", "1\n2", "9" * 400 + "x"])
def test_a_bad_interval_keeps_the_default_with_a_one_line_warning(raw: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jitrace.instrumentation"):
        settings = Settings.from_env({INTERVAL: raw, "JITRACE_HASH_SUBJECT": "true"})
    assert settings.clock_stamp_interval_s == 1.0
    assert settings.hash_subject is True  # the other settings are read as usual
    (message,) = [r.getMessage() for r in caplog.records if INTERVAL in r.getMessage()]
    assert "\n" not in message and "default 1.0" in message
    assert repr(raw if len(raw) <= 64 else raw[:64] + "...") in message  # the bad value is named, cut if long


def test_a_bad_number_elsewhere_is_named_too(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jitrace.instrumentation"):
        settings = Settings.from_env({"JITRACE_MAX_TOKEN_BYTES": "lots"})
    assert settings.max_token_bytes == Settings().max_token_bytes
    assert any("JITRACE_MAX_TOKEN_BYTES='lots'" in r.getMessage() for r in caplog.records)


# --- the schedule -----------------------------------------------------------------------------------------------
def test_one_stamp_per_target_per_interval() -> None:
    a, b = object(), object()
    assert _client.stamp_due(a, 60.0)
    assert not _client.stamp_due(a, 60.0) and not _client.stamp_due(a, 60.0)
    assert _client.stamp_due(b, 60.0)  # another target has a schedule of its own
    assert all(_client.stamp_due(a, 0.0) for _ in range(5))  # 0: every call


def test_the_next_stamp_is_due_once_the_interval_has_passed() -> None:
    target = object()
    assert _client.stamp_due(target, 0.05)
    assert not _client.stamp_due(target, 0.05)
    time.sleep(0.07)
    assert _client.stamp_due(target, 0.05)
    assert not _client.stamp_due(target, 0.05)


def test_concurrent_calls_share_one_stamp() -> None:
    target = object()
    start = threading.Barrier(8)
    taken: list[int] = []

    def caller() -> None:
        start.wait()
        taken.append(sum(_client.stamp_due(target, 60.0) for _ in range(200)))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(taken) == 1


# --- over the wire ----------------------------------------------------------------------------------------------
@pytest.fixture
def target(service_ports: tuple[int, int]) -> Iterator[str]:
    """The plain service's target with a fresh schedule (earlier tests called it), clock stamps every 60 s: the
    test's calls all fall in one interval."""
    target = f"127.0.0.1:{service_ports[0]}"
    _settings.configure(Settings(clock_stamp_interval_s=60.0))  # every_call_stamped restores the settings after
    _client._next_stamp.pop(target, None)
    yield target
    _client._next_stamp.pop(target, None)


def _check_call(exporter: Any, trace_id: int, jti: str, stamped: bool) -> None:
    client = client_span(exporter, trace_id).attributes
    (server,) = spans_of(exporter, trace_id, SpanKind.SERVER)
    seen = svc.SEEN[jti]
    assert c.CLOCK_SENT_NS in client and c.CLOCK_RECEIVED_NS in server.attributes  # on every call
    if stamped:
        assert seen[c.METADATA_SENT_NS] == str(client[c.CLOCK_SENT_NS])
        assert server.attributes[c.CLOCK_PEER_SENT_NS] == client[c.CLOCK_SENT_NS]
        assert client[c.CLOCK_DELAY_S] >= 0 and abs(client[c.CLOCK_OFFSET_S]) <= client[c.CLOCK_DELAY_S] / 2 + 0.01
    else:
        assert c.METADATA_SENT_NS not in seen
        assert c.CLOCK_PEER_SENT_NS not in server.attributes
        assert c.CLOCK_OFFSET_S not in client and c.CLOCK_DELAY_S not in client


def test_sync_channels_stamp_the_first_call_of_an_interval_only(target: str, exporter: Any) -> None:
    """Two channels to one target share its schedule; every shape is sampled alike."""
    calls: list[tuple[int, str]] = []
    with grpc.insecure_channel(target) as first, grpc.insecure_channel(target) as second:
        for channel in (first, second, first):
            for shape in svc.SHAPES:
                jti = f"interval-{len(calls)}"
                (code, _), trace_id = traced(lambda ch=channel, s=shape, j=jti: call_sync(
                    ch, s, metadata=bearer(mint(jti=j))))
                assert code is grpc.StatusCode.OK
                calls.append((trace_id, jti))
    for index, (trace_id, jti) in enumerate(calls):
        _check_call(exporter, trace_id, jti, stamped=index == 0)


def test_the_echo_comes_back_on_stamped_calls_only(target: str, exporter: Any) -> None:
    with grpc.insecure_channel(target) as channel:
        unary = channel.unary_unary(svc.UNARY)
        trailers = [dict(unary.with_call(svc.PERMISSION, metadata=bearer(mint()), timeout=10)[1].trailing_metadata())
                    for _ in range(3)]
    assert [c.METADATA_CLOCK in t for t in trailers] == [True, False, False]


def test_a_stamp_again_once_the_interval_has_passed(target: str, exporter: Any) -> None:
    _settings.configure(Settings(clock_stamp_interval_s=0.2))
    stamped = []
    with grpc.insecure_channel(target) as channel:
        for pause in (0.0, 0.0, 0.3, 0.0):
            time.sleep(pause)
            jti = f"again-{len(stamped)}"
            (code, _), trace_id = traced(lambda j=jti: call_sync(channel, "unary", metadata=bearer(mint(jti=j))))
            stamped.append(c.CLOCK_OFFSET_S in client_span(exporter, trace_id).attributes)
            assert (c.METADATA_SENT_NS in svc.SEEN[jti]) is stamped[-1]
    assert stamped == [True, False, True, False]


def test_aio_channels_follow_the_same_schedule(target: str, exporter: Any) -> None:
    async def calls() -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        async with grpc.aio.insecure_channel(target) as first, grpc.aio.insecure_channel(target) as second:
            for channel in (first, second):
                for shape in svc.SHAPES:
                    jti = f"aio-interval-{len(out)}"
                    (code, _), trace_id = await traced_async(lambda ch=channel, s=shape, j=jti: call_aio(
                        ch, s, metadata=bearer(mint(jti=j))))
                    assert code is grpc.StatusCode.OK
                    out.append((trace_id, jti))
        return out

    for index, (trace_id, jti) in enumerate(asyncio.run(calls())):
        _check_call(exporter, trace_id, jti, stamped=index == 0)


def test_interval_zero_stamps_every_call(target: str, exporter: Any) -> None:
    _settings.configure(Settings(clock_stamp_interval_s=0.0))
    with grpc.insecure_channel(target) as channel:
        for index in range(3):
            jti = f"every-{index}"
            (code, _), trace_id = traced(lambda j=jti: call_sync(channel, "unary", metadata=bearer(mint(jti=j))))
            _check_call(exporter, trace_id, jti, stamped=True)
