"""The instrumentation tests' one test service, ``jit.test.Echo``: a tiny JIT-protected gRPC service with no
OpenTelemetry or jitrace code, what a user's service looks like.

Proto-free (bytes in, bytes out), one method per call shape (``Unary``, ``UnaryStream``, ``StreamUnary``,
``StreamStream``) and ``Hostile`` (it answers with unreadable trailing metadata). A call asks for the permission its
(first) request names, ``orders:read`` unless the test says otherwise; the :class:`Verifier` checks the bearer token
with ``jwt.decode`` (RS256, :data:`AUDIENCE`, :data:`ISSUER`), the grant window claims, then whether the token's
``perms`` hold that permission (reporting the decision to ``record``, when given: the in-process tests pass
``record_policy_decision``). It denies with a ``google.rpc.ErrorInfo`` (domain ``jitrace.lab``); metadata
``x-deny-style`` picks how: ``status`` (``abort_with_status``, the default), ``abort``, or ``set_code`` (trailing
metadata + ``set_code`` and return). Streams read their requests before answering (a server that ends a call the
client is still writing to may make gRPC report INTERNAL); a later request ``b"token:<jwt>"`` is verified too (a
second check in the call). Allowed calls set trailing metadata ``x-handler: yes`` (to see jitrace merge with it).

Run as a script it is the "plain server" of the auto-instrumentation tests: it prints its port, serves until stdin
closes, then stops (no timed waits: it may run under libfaketime).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import jwt
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

SERVICE = "jit.test.Echo"
UNARY = f"/{SERVICE}/Unary"
UNARY_STREAM = f"/{SERVICE}/UnaryStream"
STREAM_UNARY = f"/{SERVICE}/StreamUnary"
STREAM_STREAM = f"/{SERVICE}/StreamStream"
HOSTILE = f"/{SERVICE}/Hostile"
SHAPES = {"unary": UNARY, "server_stream": UNARY_STREAM, "client_stream": STREAM_UNARY, "bidi": STREAM_STREAM}
ISSUER = "jit-issuer"
AUDIENCE = "jit-test"
DOMAIN = "jitrace.lab"
PERMISSION = b"orders:read"  # what a call asks for unless it names another; tokens the tests mint grant it
STREAM_REPLIES = 3  # responses a unary-stream call returns
HOSTILE_TRAILERS = (("jit-clock", "not,a,clock"), ("grpc-status-details-bin", b"\xff\x00garbage"))

# Metadata the service saw, by the token's jti (tests check what actually went over the wire).
SEEN: dict[str, dict[str, str]] = {}

Metadata = Sequence[tuple[str, str | bytes]]


@dataclass
class Denial(Exception):
    code: grpc.StatusCode
    reason: str

    def status(self) -> grpc.Status:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN))
        return rpc_status.to_status(status_pb2.Status(code=self.code.value[0], message=self.reason,
                                                      details=[detail]))


def _bearer(metadata: Metadata) -> str | None:
    value = next((v for k, v in metadata or () if k == "authorization" and isinstance(v, str)), None)
    return value.removeprefix("Bearer ").strip() if value else None


class Verifier:
    """The service's access check: the token, the grant window, then the permission (a policy decision)."""

    def __init__(self, public_key: Any, record: Callable[..., None] | None = None) -> None:
        self.public_key = public_key
        self.record = record

    def verify(self, token: str | None) -> dict:
        """The token's claims; raises :class:`Denial` when it is missing or does not verify."""
        if not token:
            raise Denial(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
        try:
            return jwt.decode(token, self.public_key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
        except jwt.ExpiredSignatureError:
            raise Denial(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED") from None
        except jwt.ImmatureSignatureError:
            raise Denial(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_NOT_YET_VALID") from None
        except jwt.InvalidTokenError:
            raise Denial(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID") from None

    def check(self, metadata: Metadata, required: bytes = PERMISSION) -> grpc.Status | None:
        """None when a call with ``metadata`` asking for ``required`` may go on, else the status to deny it with."""
        try:
            claims = self.verify(_bearer(metadata))
            SEEN[str(claims.get("jti"))] = {k: v for k, v in metadata if isinstance(v, str)}
            start, end = claims.get("grant_start"), claims.get("grant_end")
            if start is not None and end is not None and not start <= time.time() <= end:
                raise Denial(grpc.StatusCode.PERMISSION_DENIED, "GRANT_NOT_ACTIVE")
            perms = [str(p) for p in claims.get("perms") or ()]
            permission = required.decode(errors="replace")
            allowed = permission in perms
            if self.record is not None:
                self.record(allowed, engine="test", policy_id="test-policy", version="v1", rule="perms-claim",
                            required=permission, granted=perms, eval_s=0.0)
            if not allowed:
                raise Denial(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_MISSING")
        except Denial as denial:
            return denial.status()
        return None

    def check_stream(self, metadata: Metadata, requests: list[bytes]) -> grpc.Status | None:
        """A stream's check: the first request names the permission; a later ``b"token:<jwt>"`` is verified too."""
        denial = self.check(metadata, requests[0] if requests else PERMISSION)
        for message in requests[1:]:
            if denial is None and message.startswith(b"token:"):
                try:
                    self.verify(message[len(b"token:"):].decode())
                except Denial as later:
                    denial = later.status()
        return denial


def _style(context: Any) -> str:
    return next((v for k, v in context.invocation_metadata() or () if k == "x-deny-style"), "status")


def _sync_deny(context: grpc.ServicerContext, status: grpc.Status) -> bytes:
    style = _style(context)
    if style == "status":
        context.abort_with_status(status)
    context.set_trailing_metadata(status.trailing_metadata)
    if style == "abort":
        context.abort(status.code, status.details)
    context.set_code(status.code)
    context.set_details(status.details)
    return b""


async def _aio_deny(context: Any, status: grpc.Status) -> bytes:
    style = _style(context)
    if style == "status":
        await context.abort_with_status(status)
    if style == "abort":
        await context.abort(status.code, status.details, status.trailing_metadata)
    context.set_trailing_metadata(status.trailing_metadata)
    context.set_code(status.code)
    context.set_details(status.details)
    return b""


ALLOWED = (("x-handler", "yes"),)


def _generic_handler(unary: Callable, unary_stream: Callable, stream_unary: Callable, stream_stream: Callable,
                     hostile: Callable) -> grpc.GenericRpcHandler:
    """The service's methods, sync or aio alike."""
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "UnaryStream": grpc.unary_stream_rpc_method_handler(unary_stream),
        "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary),
        "StreamStream": grpc.stream_stream_rpc_method_handler(stream_stream),
        "Hostile": grpc.unary_unary_rpc_method_handler(hostile),
    })


def sync_handler(verifier: Verifier) -> grpc.GenericRpcHandler:
    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        denial = verifier.check(context.invocation_metadata(), request)
        if denial is not None:
            return _sync_deny(context, denial)
        context.set_trailing_metadata(ALLOWED)
        return b"ok:" + request

    def unary_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        denial = verifier.check(context.invocation_metadata(), request)
        if denial is not None:
            _sync_deny(context, denial)
            return
        context.set_trailing_metadata(ALLOWED)
        for i in range(STREAM_REPLIES):
            yield b"ok:%d" % i

    def stream_unary(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        received = list(requests)
        denial = verifier.check_stream(context.invocation_metadata(), received)
        if denial is not None:
            return _sync_deny(context, denial)
        context.set_trailing_metadata(ALLOWED)
        return b"ok:%d" % len(received)

    def stream_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        received = list(requests)
        denial = verifier.check_stream(context.invocation_metadata(), received)
        if denial is not None:
            _sync_deny(context, denial)
            return
        context.set_trailing_metadata(ALLOWED)
        for n in range(len(received)):
            yield b"ok:%d" % n

    def hostile(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata(HOSTILE_TRAILERS)
        if request == b"deny":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied with unreadable details")
        return request

    return _generic_handler(unary, unary_stream, stream_unary, stream_stream, hostile)


def aio_handler(verifier: Verifier) -> grpc.GenericRpcHandler:
    async def unary(request: bytes, context: Any) -> bytes:
        denial = verifier.check(context.invocation_metadata(), request)
        if denial is not None:
            return await _aio_deny(context, denial)
        context.set_trailing_metadata(ALLOWED)
        return b"ok:" + request

    async def unary_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        denial = verifier.check(context.invocation_metadata(), request)
        if denial is not None:
            await _aio_deny(context, denial)
            return
        context.set_trailing_metadata(ALLOWED)
        for i in range(STREAM_REPLIES):
            yield b"ok:%d" % i

    async def stream_unary(requests: AsyncIterator[bytes], context: Any) -> bytes:
        received = [r async for r in requests]
        denial = verifier.check_stream(context.invocation_metadata(), received)
        if denial is not None:
            return await _aio_deny(context, denial)
        context.set_trailing_metadata(ALLOWED)
        return b"ok:%d" % len(received)

    async def stream_stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        received = [r async for r in requests]
        denial = verifier.check_stream(context.invocation_metadata(), received)
        if denial is not None:
            await _aio_deny(context, denial)
            return
        context.set_trailing_metadata(ALLOWED)
        for n in range(len(received)):
            yield b"ok:%d" % n

    async def hostile(request: bytes, context: Any) -> bytes:
        context.set_trailing_metadata(HOSTILE_TRAILERS)
        if request == b"deny":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied with unreadable details")
        return request

    return _generic_handler(unary, unary_stream, stream_unary, stream_stream, hostile)


def serve_sync(verifier: Verifier, interceptors: Sequence[Any] = ()) -> tuple[grpc.Server, int, int]:
    """A started sync server on loopback: (server, insecure port, local-credentials port for call credentials)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[sync_handler(verifier)],
                         interceptors=list(interceptors))
    port = server.add_insecure_port("127.0.0.1:0")
    secure_port = server.add_secure_port(
        "127.0.0.1:0", grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    )
    server.start()
    return server, port, secure_port


async def serve_aio(verifier: Verifier, interceptors: Sequence[Any] = ()) -> tuple[grpc.aio.Server, int, int]:
    server = grpc.aio.server(handlers=[aio_handler(verifier)], interceptors=list(interceptors))
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
