"""Recording call credentials: the token they send is the token on the span; refresh before expiry, marked."""

from __future__ import annotations

import threading
import time

import grpc
import grpc.aio
import plain_service as svc
import pytest
from helpers import call_aio, call_sync, client_span, mint, run, traced, traced_async
from hypothesis import given, settings
from hypothesis import strategies as st

from jitrace.instrumentation import _credentials, _safety, bearer_credentials, refreshing_credentials
from jitrace.instrumentation import contract as c


@pytest.mark.parametrize("shape", list(svc.SHAPES))
def test_bearer_credentials_send_the_token_and_record_its_facts(shape, secure_channel, exporter):
    token = mint(jti=f"cred-{shape}", sub="carol")
    creds = bearer_credentials(token)
    (code, _), trace_id = traced(lambda: call_sync(secure_channel, shape, credentials=creds))
    assert code is grpc.StatusCode.OK
    assert svc.SEEN[f"cred-{shape}"]["authorization"] == f"Bearer {token}"  # what went over the wire
    attrs = client_span(exporter, trace_id).attributes
    assert attrs[c.TOKEN_ID] == f"cred-{shape}" and attrs[c.TOKEN_SUB] == "carol"
    assert c.TOKEN_REFRESHED not in attrs  # not a refreshing credential


def test_bearer_credentials_from_a_callable(secure_channel, exporter):
    issued: list[str] = []

    def get_token() -> str:
        issued.append(mint(jti=f"cb-{len(issued)}"))
        return issued[-1]

    creds = bearer_credentials(get_token)
    for _ in range(3):
        (code, _), trace_id = traced(lambda: call_sync(secure_channel, "unary", credentials=creds))
        assert code is grpc.StatusCode.OK
        span_jti = client_span(exporter, trace_id).attributes[c.TOKEN_ID]
        # the token recorded is the token the server received
        assert svc.SEEN[span_jti]["authorization"] == f"Bearer {issued[int(span_jti[3:])]}"
    assert len(issued) == 3  # one token per call: the interceptor's is handed to the plugin, not fetched twice


def test_refreshing_credentials_refresh_a_token_about_to_expire(secure_channel, exporter):
    lifetimes = iter([30, 30, 600])  # s; the threshold is 60 s (JITRACE_REFRESH_BEFORE_S default)
    fetched: list[str] = []

    def fetch() -> str:
        now = int(time.time())
        fetched.append(mint(jti=f"r-{len(fetched)}", iat=now, exp=now + next(lifetimes)))
        return fetched[-1]

    creds = refreshing_credentials(fetch)
    seen = []
    for _ in range(4):
        (code, _), trace_id = traced(lambda: call_sync(secure_channel, "unary", credentials=creds))
        assert code is grpc.StatusCode.OK
        attrs = client_span(exporter, trace_id).attributes
        seen.append((attrs[c.TOKEN_ID], attrs[c.TOKEN_REFRESHED]))
        assert svc.SEEN[attrs[c.TOKEN_ID]]["authorization"] == f"Bearer {fetched[int(attrs[c.TOKEN_ID][2:])]}"
    # first fetch is not a refresh; 30 s left < 60 s: refreshed; 600 s left: kept
    assert seen == [("r-0", False), ("r-1", True), ("r-2", True), ("r-2", False)]


def test_refresh_threshold_is_configurable(secure_channel, exporter):
    now = int(time.time())
    token = mint(jti="long-enough", iat=now, exp=now + 30)
    creds = refreshing_credentials(lambda: token, refresh_before_s=10)
    flags = []
    for _ in range(2):
        (_, _), trace_id = traced(lambda: call_sync(secure_channel, "unary", credentials=creds))
        flags.append(client_span(exporter, trace_id).attributes[c.TOKEN_REFRESHED])
    assert flags == [False, False]


def test_refreshing_credentials_on_an_aio_channel(service_ports, exporter):
    now = int(time.time())
    tokens = iter([mint(jti="aio-r0", iat=now, exp=now + 5), mint(jti="aio-r1", iat=now, exp=now + 900)])
    creds = refreshing_credentials(lambda: next(tokens))

    async def go():
        out = []
        channel_creds = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        async with grpc.aio.secure_channel(f"127.0.0.1:{service_ports[1]}", channel_creds) as channel:
            for shape in ("unary", "bidi"):
                out.append(await traced_async(lambda s=shape: call_aio(channel, s, credentials=creds)))
        return out

    results = run(go())
    flags = []
    for (code, _), trace_id in results:
        assert code is grpc.StatusCode.OK
        attrs = client_span(exporter, trace_id).attributes
        flags.append((attrs[c.TOKEN_ID], attrs[c.TOKEN_REFRESHED]))
    assert flags == [("aio-r0", False), ("aio-r1", True)]


def test_a_failing_fetch_fails_the_call_as_it_would_without_jitrace(secure_channel, exporter):
    def fetch() -> str:
        raise RuntimeError("token service down")

    def plain_plugin(context, callback):
        try:
            fetch()
        except Exception as exc:  # noqa: BLE001
            callback(None, exc)

    plain = grpc.metadata_call_credentials(plain_plugin)
    baseline, _ = traced(lambda: call_sync(secure_channel, "unary", credentials=plain))
    before = _safety.failure_counts().get("credentials", 0)
    (code, _), trace_id = traced(lambda: call_sync(secure_channel, "unary", credentials=refreshing_credentials(fetch)))
    assert code is baseline[0] and code is not grpc.StatusCode.OK
    assert _safety.failure_counts()["credentials"] == before + 1
    # the token is unknown, not absent: no jit.token.present=false to mislead the analyzer
    assert c.TOKEN_PRESENT not in client_span(exporter, trace_id).attributes


def test_credentials_on_an_insecure_channel_are_not_sent(service_ports, exporter):
    """gRPC refuses call credentials on an insecure channel; jitrace changes nothing about that."""
    with grpc.insecure_channel(f"127.0.0.1:{service_ports[0]}") as channel:
        (code, _), trace_id = traced(lambda: call_sync(channel, "unary", credentials=bearer_credentials(mint())))
    assert code is not grpc.StatusCode.OK


def test_bad_arguments_are_refused_at_once():
    with pytest.raises(TypeError):
        bearer_credentials("")
    with pytest.raises(TypeError):
        refreshing_credentials("not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        refreshing_credentials(lambda: "x", refresh_before_s=-1)


@settings(max_examples=60, deadline=None)
@given(lifetime=st.integers(-3600, 3600), threshold=st.floats(0, 600, allow_nan=False))
def test_refresh_decision(lifetime, threshold):
    """A kept token is replaced exactly when its remaining lifetime (by this clock) is below the threshold."""
    now = 1_700_000_000
    plugin = _credentials._RefreshingPlugin(lambda: mint(iat=now, exp=now + lifetime), threshold)
    first, refreshed = plugin.current(now_s=now)
    assert refreshed is False
    again, refreshed = plugin.current(now_s=now)
    assert refreshed is (lifetime < threshold)
    assert (again is first) is (lifetime >= threshold)


def test_refreshing_plugin_is_thread_safe():
    now = time.time()
    calls: list[int] = []
    plugin = _credentials._RefreshingPlugin(lambda: calls.append(1) or mint(exp=int(now) + 600), 60)
    threads = [threading.Thread(target=plugin.current) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def _local() -> grpc.ChannelCredentials:
    return grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)


@pytest.mark.parametrize("shape", list(svc.SHAPES))
def test_credentials_baked_into_the_channel(service_ports, exporter, shape):
    """grpc.composite_channel_credentials(..., jitrace credentials): every call of the channel is recorded."""
    now = int(time.time())
    tokens = iter([mint(jti=f"ch-{shape}-0", iat=now, exp=now + 20), mint(jti=f"ch-{shape}-1", iat=now, exp=now + 900)])
    creds = grpc.composite_channel_credentials(_local(), refreshing_credentials(lambda: next(tokens)))
    seen = []
    with grpc.secure_channel(f"127.0.0.1:{service_ports[1]}", creds) as ch:
        for _ in range(2):
            (code, _), trace_id = traced(lambda c=ch: call_sync(c, shape))
            assert code is grpc.StatusCode.OK
            attrs = client_span(exporter, trace_id).attributes
            seen.append((attrs[c.TOKEN_ID], attrs[c.TOKEN_REFRESHED]))
            assert svc.SEEN[attrs[c.TOKEN_ID]]["authorization"].startswith("Bearer ")
    assert seen == [(f"ch-{shape}-0", False), (f"ch-{shape}-1", True)]


def test_composite_call_credentials_are_recognised(secure_channel, exporter):
    def extra(context, callback):
        callback((("x-extra", "1"),), None)

    token = mint(jti="composite-1")
    creds = grpc.composite_call_credentials(grpc.metadata_call_credentials(extra), bearer_credentials(token))
    (code, _), trace_id = traced(lambda: call_sync(secure_channel, "unary", credentials=creds))
    assert code is grpc.StatusCode.OK
    assert client_span(exporter, trace_id).attributes[c.TOKEN_ID] == "composite-1"
    assert svc.SEEN["composite-1"]["x-extra"] == "1"


def test_credentials_baked_into_an_aio_channel(service_ports, exporter):
    token = mint(jti="aio-ch-1")
    creds = grpc.composite_channel_credentials(_local(), bearer_credentials(token))

    async def go():
        async with grpc.aio.secure_channel(f"127.0.0.1:{service_ports[1]}", creds) as channel:
            return [await traced_async(lambda s=s: call_aio(channel, s)) for s in svc.SHAPES]

    for (code, _), trace_id in run(go()):
        assert code is grpc.StatusCode.OK
        assert client_span(exporter, trace_id).attributes[c.TOKEN_ID] == "aio-ch-1"
