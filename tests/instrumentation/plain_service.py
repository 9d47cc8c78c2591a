"""A tiny JIT-protected gRPC service with no OpenTelemetry or jitrace code: what a user's service looks like.

Proto-free (bytes in, bytes out) so tests need no generated stubs. Four methods, one per call shape, each verifying
the bearer token with ``jwt.decode`` and denying with a ``google.rpc.ErrorInfo`` (domain ``jitrace.lab``):
UNAUTHENTICATED for TOKEN_MISSING / TOKEN_EXPIRED / TOKEN_NOT_YET_VALID / TOKEN_INVALID, PERMISSION_DENIED for
PERMISSION_MISSING (the token's ``roles`` lack ``reader``). A fifth method answers with hostile trailing metadata.

Run as a script it is the "plain server" of the auto-instrumentation tests: it prints its port, serves until stdin
closes, then stops (no timed waits: it may run under libfaketime).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures

import grpc
import grpc.aio
import jwt
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

SERVICE = "jit.test.Echo"
UNARY = f"/{SERVICE}/Unary"
SERVER_STREAM = f"/{SERVICE}/ServerStream"
CLIENT_STREAM = f"/{SERVICE}/ClientStream"
BIDI = f"/{SERVICE}/Bidi"
HOSTILE = f"/{SERVICE}/Hostile"
SHAPES = {"unary": UNARY, "server_stream": SERVER_STREAM, "client_stream": CLIENT_STREAM, "bidi": BIDI}
ISSUER = "jit-issuer"
AUDIENCE = "jit-test"
DOMAIN = "jitrace.lab"
STREAM_REPLIES = 3

# Metadata the service saw, by the token's jti (tests check what actually went over the wire).
SEEN: dict[str, dict[str, str]] = {}


def status_for(code: grpc.StatusCode, reason: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
    detail = any_pb2.Any()
    detail.Pack(info)
    rpc_code = {grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED}.get(code, code_pb2.PERMISSION_DENIED)
    return rpc_status.to_status(status_pb2.Status(code=rpc_code, message=reason.lower(), details=[detail]))


class Verifier:
    def __init__(self, public_key: bytes | str) -> None:
        self.public_key = public_key

    def check(self, metadata: tuple[tuple[str, str | bytes], ...]) -> grpc.Status | None:
        """None when the call may go on, else the status to deny it with."""
        md = {k: v for k, v in metadata if isinstance(v, str)}
        auth = md.get("authorization")
        if not auth:
            return status_for(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
        token = auth.removeprefix("Bearer ").strip()
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
        except jwt.ExpiredSignatureError:
            return status_for(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
        except jwt.ImmatureSignatureError:
            return status_for(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_NOT_YET_VALID")
        except jwt.InvalidTokenError:
            return status_for(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
        SEEN[str(claims.get("jti"))] = md
        if "reader" not in (claims.get("roles") or ()):
            return status_for(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_MISSING")
        return None


HOSTILE_TRAILERS = (("jit-clock", "not,a,clock"), ("grpc-status-details-bin", b"\xff\x00garbage"))


def _generic_handler(unary: Callable, server_stream: Callable, client_stream: Callable, bidi: Callable,
                     hostile: Callable) -> grpc.GenericRpcHandler:
    """The service's methods, sync or aio alike: one per call shape, and the hostile one."""
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Hostile": grpc.unary_unary_rpc_method_handler(hostile),
        },
    )


def sync_handler(verifier: Verifier) -> grpc.GenericRpcHandler:
    def guard(context: grpc.ServicerContext) -> None:
        denial = verifier.check(context.invocation_metadata())
        if denial is not None:
            context.abort_with_status(denial)

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        guard(context)
        return request

    def server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        guard(context)
        for _ in range(STREAM_REPLIES):
            yield request

    # Streams read the requests before a denial: gRPC may report INTERNAL when a server ends a call the client is
    # still writing to (a race of gRPC's own, with or without instrumentation).
    def client_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        received = list(requests)
        guard(context)
        return b"".join(received)

    def bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        received = list(requests)
        guard(context)
        yield from received

    def hostile(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata(HOSTILE_TRAILERS)
        if request == b"deny":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied with unreadable details")
        return request

    return _generic_handler(unary, server_stream, client_stream, bidi, hostile)


def aio_handler(verifier: Verifier) -> grpc.GenericRpcHandler:
    async def guard(context: grpc.aio.ServicerContext) -> None:
        denial = verifier.check(context.invocation_metadata())
        if denial is not None:
            await context.abort(denial.code, denial.details, denial.trailing_metadata)

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await guard(context)
        return request

    async def server_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        await guard(context)
        for _ in range(STREAM_REPLIES):
            yield request

    async def client_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        received = [r async for r in requests]
        await guard(context)
        return b"".join(received)

    async def bidi(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        # read before a denial (see the sync handlers)
        received = [r async for r in requests]
        await guard(context)
        for r in received:
            yield r

    async def hostile(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        context.set_trailing_metadata(HOSTILE_TRAILERS)
        if request == b"deny":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied with unreadable details")
        return request

    return _generic_handler(unary, server_stream, client_stream, bidi, hostile)


def serve_sync(verifier: Verifier) -> tuple[grpc.Server, int, int]:
    """A started sync server on loopback: (server, insecure port, local-credentials port for call credentials)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((sync_handler(verifier),))
    port = server.add_insecure_port("127.0.0.1:0")
    secure_port = server.add_secure_port(
        "127.0.0.1:0", grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    )
    server.start()
    return server, port, secure_port


async def serve_aio(verifier: Verifier) -> tuple[grpc.aio.Server, int, int]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((aio_handler(verifier),))
    port = server.add_insecure_port("127.0.0.1:0")
    secure_port = server.add_secure_port(
        "127.0.0.1:0", grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    )
    await server.start()
    return server, port, secure_port


def main() -> None:
    with open(os.environ["JIT_PUBLIC_KEY_FILE"], "rb") as f:
        verifier = Verifier(f.read())
    if os.environ.get("JIT_AIO") == "1":

        async def run() -> None:
            server, port, _ = await serve_aio(verifier)
            print(port, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            await server.stop(None)

        asyncio.run(run())
        return
    server, port, _ = serve_sync(verifier)
    print(port, flush=True)
    sys.stdin.read()  # the test closes stdin to stop us
    server.stop(None)


if __name__ == "__main__":
    main()
