"""Client facts on OpenTelemetry's client span, grpc.aio, all four shapes, allowed and denied, against an aio server
(and an aio client against the sync server)."""

from __future__ import annotations

import time

import grpc
import grpc.aio
import helpers
import plain_service as svc
import pytest
from helpers import bearer, call_aio, client_span, jit_attrs, mint, root_span, run, traced_async

from jitrace.instrumentation import contract as c

SHAPES = list(svc.SHAPES)

CASES = {
    "allowed": (lambda: bearer(mint()), grpc.StatusCode.OK, None),
    "expired": (lambda: bearer(mint(iat=int(time.time()) - 600, exp=int(time.time()) - 30)),
                grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED"),
    "missing": (lambda: None, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
    "forbidden": (lambda: bearer(mint(perms=[])), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_MISSING"),
}


async def _against_aio_server(shape: str, metadata):
    server, port, _ = await svc.serve_aio(svc.Verifier(helpers.public_pem()))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await traced_async(lambda: call_aio(channel, shape, metadata=metadata))
    finally:
        await server.stop(None)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shape", SHAPES)
def test_aio_call_facts(shape, case, exporter):
    make_metadata, expected_code, reason = CASES[case]
    metadata = make_metadata()
    before_ns = time.time_ns()
    (code, reply), trace_id = run(_against_aio_server(shape, metadata))
    assert code is expected_code

    attrs = client_span(exporter, trace_id).attributes
    assert attrs[c.RPC_GRPC_STATUS_CODE] == expected_code.value[0]
    assert attrs[c.TOKEN_PRESENT] is (case != "missing")
    if case != "missing":
        assert attrs[c.TOKEN_ISS] == svc.ISSUER and c.TOKEN_ID in attrs and c.GRANT_ID in attrs
    assert attrs[c.CLOCK_SENT_NS] >= before_ns
    assert attrs.get(c.DENIAL_REASON) == reason
    assert 0 <= attrs[c.CLOCK_DELAY_S] < 5
    assert abs(attrs[c.CLOCK_OFFSET_S]) <= attrs[c.CLOCK_DELAY_S] / 2 + 0.01
    assert jit_attrs(root_span(exporter, trace_id)) == {}


@pytest.mark.parametrize("shape", SHAPES)
def test_aio_client_against_the_sync_server(shape, exporter, service_ports):
    token = mint(jti=f"aio-sync-{shape}")

    async def go():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service_ports[0]}") as channel:
            return await traced_async(lambda: call_aio(channel, shape, metadata=bearer(token)))

    (code, _), trace_id = run(go())
    assert code is grpc.StatusCode.OK
    attrs = client_span(exporter, trace_id).attributes
    assert attrs[c.TOKEN_ID] == f"aio-sync-{shape}"
    assert svc.SEEN[f"aio-sync-{shape}"][c.METADATA_SENT_NS] == str(attrs[c.CLOCK_SENT_NS])


def test_aio_user_interceptors_keep_their_place(exporter, service_ports):
    """A channel made with the user's own interceptors: OpenTelemetry first, jitrace next, the user's after."""
    seen: list[str] = []

    class UserInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, details, request):
            seen.append(",".join(k for k, _ in (details.metadata or ())))
            return await continuation(details, request)

    async def go():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service_ports[0]}",
                                             interceptors=[UserInterceptor()]) as channel:
            kinds = [type(i).__module__.split(".")[0] for i in channel._unary_unary_interceptors]
            result = await traced_async(lambda: call_aio(channel, "unary", metadata=bearer(mint())))
            return kinds, result

    kinds, ((code, _), trace_id) = run(go())
    assert kinds[:2] == ["opentelemetry", "jitrace"] and kinds[2] != "jitrace"
    assert code is grpc.StatusCode.OK
    # the user's interceptor runs inside jitrace's: it sees the clock stamp jitrace added
    assert c.METADATA_SENT_NS in seen[0].split(",")
    assert c.TOKEN_ID in client_span(exporter, trace_id).attributes
