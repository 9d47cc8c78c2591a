"""The server tests' test service and helpers (the fixtures that use them are in ``conftest.py``).

The test service verifies the bearer token with ``jwt.decode`` (RS256, audience :data:`AUDIENCE`, issuer
:data:`ISSUER`), checks the grant window claims, then whether the request payload (a permission such as
``b"orders:read"``) is among the token's ``perms``, recording that with ``record_policy_decision``. It denies with a
``google.rpc.ErrorInfo`` (domain ``jitrace.lab``) in ``grpc-status-details-bin``; metadata ``x-deny-style`` picks how:
``status`` (``abort_with_status``, the default), ``abort`` (trailing metadata + ``abort``), ``set_code`` (trailing
metadata + ``set_code`` and return). On streaming requests, a message ``b"token:<jwt>"`` re-verifies that token (a
per-message check). Allowed calls set trailing metadata ``x-handler: yes`` (to see jitrace merge with it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import jwt
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jitrace.instrumentation._policy import record_policy_decision

SERVICE = "jit.test.Echo"
UNARY = f"/{SERVICE}/Unary"
UNARY_STREAM = f"/{SERVICE}/UnaryStream"
STREAM_UNARY = f"/{SERVICE}/StreamUnary"
STREAM_STREAM = f"/{SERVICE}/StreamStream"
SHAPES = (UNARY, UNARY_STREAM, STREAM_UNARY, STREAM_STREAM)
ISSUER = "jit-issuer"
AUDIENCE = "jit-test"
DOMAIN = "jitrace.lab"
STREAM_REPLIES = 3  # responses a unary-stream call returns



def spans_of_kind(memory: InMemorySpanExporter, kind: trace.SpanKind) -> list[ReadableSpan]:
    return [s for s in memory.get_finished_spans() if s.kind == kind]


def server_span(memory: InMemorySpanExporter) -> ReadableSpan:
    """The one server span of the test (fails if there is not exactly one).

    The server thread may end its span a moment after the client saw the status: wait for it (a sync point, not a
    timing assertion).
    """
    deadline = time.monotonic() + 5
    found = spans_of_kind(memory, trace.SpanKind.SERVER)
    while not found and time.monotonic() < deadline:
        time.sleep(0.01)
        found = spans_of_kind(memory, trace.SpanKind.SERVER)
    assert len(found) == 1, [s.name for s in memory.get_finished_spans()]
    return found[0]


# --- the test service ---------------------------------------------------------------------------------------------
@dataclass
class Denial(Exception):
    code: grpc.StatusCode
    reason: str

    def status(self) -> grpc.Status:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN))
        return rpc_status.to_status(status_pb2.Status(code=self.code.value[0], message=self.reason,
                                                      details=[detail]))


def _metadata(context: Any, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return None


def _bearer(context: Any) -> str | None:
    value = _metadata(context, "authorization")
    return value.split(" ", 1)[1] if value and value.startswith("Bearer ") else value


class Checker:
    """The service's access check: jwt.decode, the grant window, then the permission (recorded as a decision)."""

    def __init__(self, public_key: Any) -> None:
        self.public_key = public_key

    def verify(self, token: str | None) -> dict:
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

    def check(self, token: str | None, required: bytes) -> None:
        claims = self.verify(token)
        start, end = claims.get("grant_start"), claims.get("grant_end")
        if start is not None and end is not None and not start <= time.time() <= end:
            raise Denial(grpc.StatusCode.PERMISSION_DENIED, "GRANT_NOT_ACTIVE")
        perms = [str(p) for p in claims.get("perms", [])]
        permission = required.decode(errors="replace")
        allowed = permission in perms
        record_policy_decision(allowed, engine="test", policy_id="test-policy", version="v1",
                               rule="perms-claim", required=permission, granted=perms, eval_s=0.0)
        if not allowed:
            raise Denial(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_MISSING")

    def recheck(self, message: bytes) -> None:
        """A stream message carrying a fresh token: verify it too (a later check in the same call)."""
        if message.startswith(b"token:"):
            self.verify(message[len(b"token:"):].decode())


def _sync_deny(context: grpc.ServicerContext, denial: Denial) -> bytes:
    status = denial.status()
    style = _metadata(context, "x-deny-style") or "status"
    if style == "status":
        context.abort_with_status(status)
    context.set_trailing_metadata(status.trailing_metadata)
    if style == "abort":
        context.abort(status.code, status.details)
    context.set_code(status.code)
    context.set_details(status.details)
    return b""


def _generic_handler(unary: Any, unary_stream: Any, stream_unary: Any, stream_stream: Any) -> grpc.GenericRpcHandler:
    """The test service's four call shapes, sync or aio alike."""
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "UnaryStream": grpc.unary_stream_rpc_method_handler(unary_stream),
        "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary),
        "StreamStream": grpc.stream_stream_rpc_method_handler(stream_stream),
    })


def sync_handlers(checker: Checker) -> grpc.GenericRpcHandler:
    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            checker.check(_bearer(context), request)
        except Denial as denial:
            return _sync_deny(context, denial)
        context.set_trailing_metadata((("x-handler", "yes"),))
        return b"ok:" + request

    def unary_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            checker.check(_bearer(context), request)
        except Denial as denial:
            _sync_deny(context, denial)
            return
        context.set_trailing_metadata((("x-handler", "yes"),))
        for i in range(STREAM_REPLIES):
            yield b"ok:%d" % i

    def messages(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for n, message in enumerate(requests):
            if n == 0:
                checker.check(_bearer(context), message)
            else:
                checker.recheck(message)
            yield b"ok:%d" % n

    def stream_unary(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        try:
            count = sum(1 for _ in messages(requests, context))
        except Denial as denial:
            return _sync_deny(context, denial)
        context.set_trailing_metadata((("x-handler", "yes"),))
        return b"ok:%d" % count

    def stream_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            yield from messages(requests, context)
        except Denial as denial:
            _sync_deny(context, denial)
            return
        context.set_trailing_metadata((("x-handler", "yes"),))

    return _generic_handler(unary, unary_stream, stream_unary, stream_stream)


async def _aio_deny(context: Any, denial: Denial) -> bytes:
    status = denial.status()
    style = _metadata(context, "x-deny-style") or "status"
    if style == "status":
        await context.abort_with_status(status)
    if style == "abort":
        await context.abort(status.code, status.details, status.trailing_metadata)
    context.set_trailing_metadata(status.trailing_metadata)
    context.set_code(status.code)
    context.set_details(status.details)
    return b""


def aio_handlers(checker: Checker) -> grpc.GenericRpcHandler:
    async def unary(request: bytes, context: Any) -> bytes:
        try:
            checker.check(_bearer(context), request)
        except Denial as denial:
            return await _aio_deny(context, denial)
        context.set_trailing_metadata((("x-handler", "yes"),))
        return b"ok:" + request

    async def unary_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        try:
            checker.check(_bearer(context), request)
        except Denial as denial:
            await _aio_deny(context, denial)
            return
        context.set_trailing_metadata((("x-handler", "yes"),))
        for i in range(STREAM_REPLIES):
            yield b"ok:%d" % i

    async def messages(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        n = 0
        async for message in requests:
            if n == 0:
                checker.check(_bearer(context), message)
            else:
                checker.recheck(message)
            yield b"ok:%d" % n
            n += 1

    async def stream_unary(requests: AsyncIterator[bytes], context: Any) -> bytes:
        count = 0
        try:
            async for _ in messages(requests, context):
                count += 1
        except Denial as denial:
            return await _aio_deny(context, denial)
        context.set_trailing_metadata((("x-handler", "yes"),))
        return b"ok:%d" % count

    async def stream_stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        try:
            async for reply in messages(requests, context):
                yield reply
        except Denial as denial:
            await _aio_deny(context, denial)
            return
        context.set_trailing_metadata((("x-handler", "yes"),))

    return _generic_handler(unary, unary_stream, stream_unary, stream_stream)


# --- calling it (plain grpc: no jitrace client side) --------------------------------------------------------------
@dataclass
class Outcome:
    code: grpc.StatusCode
    replies: list[bytes]
    trailing: dict[str, Any]


def call_metadata(token: str | None = None, *, sent_ns: int | None = None, style: str | None = None,
                  extra: tuple = ()) -> tuple[tuple[str, str], ...]:
    md: list[tuple[str, str]] = list(extra)
    if token is not None:
        md.append(("authorization", f"Bearer {token}"))
    if sent_ns is not None:
        md.append(("jit-sent-ns", str(sent_ns)))
    if style is not None:
        md.append(("x-deny-style", style))
    return tuple(md)


def _requests(shape: str, payloads: list[bytes] | None) -> list[bytes]:
    if payloads is not None:
        return payloads
    return [b"orders:read"] if shape in (UNARY, UNARY_STREAM) else [b"orders:read", b"more"]


def raw_channel(target: str) -> grpc.Channel:
    """A grpc channel under every instrumentor's wrapper: no client interceptor at all (OTel's client wrap hides a
    stream's code and trailers; jitrace's client side, if another test module switched it on, would stamp)."""
    make = grpc.insecure_channel
    while hasattr(make, "__wrapped__"):
        make = make.__wrapped__
    return make(target)


def raw_aio_channel(target: str) -> grpc.aio.Channel:
    """A grpc.aio channel without any instrumentor's interceptors (what ``grpc.aio.insecure_channel`` builds)."""
    from grpc.aio._channel import Channel

    return Channel(target, (), None, None, None)


def sync_call(target: str, shape: str, metadata: tuple = (), payloads: list[bytes] | None = None, *,
              traced: bool = False) -> Outcome:
    """One call of ``shape`` on a plain grpc channel; the status code, replies and trailing metadata.

    ``traced``: through the (OTel-instrumented) ``grpc.insecure_channel``, unary shapes only.
    """
    requests = _requests(shape, payloads)
    with grpc.insecure_channel(target) if traced else raw_channel(target) as channel:
        try:
            if shape == UNARY:
                reply, call = channel.unary_unary(shape).with_call(requests[0], metadata=metadata, timeout=10)
                return Outcome(call.code(), [reply], dict(call.trailing_metadata() or ()))
            if shape == STREAM_UNARY:
                reply, call = channel.stream_unary(shape).with_call(iter(requests), metadata=metadata, timeout=10)
                return Outcome(call.code(), [reply], dict(call.trailing_metadata() or ()))
            if shape == UNARY_STREAM:
                stream = channel.unary_stream(shape)(requests[0], metadata=metadata, timeout=10)
            else:
                stream = channel.stream_stream(shape)(iter(requests), metadata=metadata, timeout=10)
            replies = list(stream)
            return Outcome(stream.code(), replies, dict(stream.trailing_metadata() or ()))
        except grpc.RpcError as error:
            return Outcome(error.code(), [], dict(error.trailing_metadata() or ()))


async def aio_call(target: str, shape: str, metadata: tuple = (), payloads: list[bytes] | None = None, *,
                   traced: bool = False) -> Outcome:
    """One call of ``shape`` on a plain grpc.aio channel (``traced``: through ``grpc.aio.insecure_channel``)."""
    requests = _requests(shape, payloads)

    async def gen() -> AsyncIterator[bytes]:
        for r in requests:
            yield r

    async with grpc.aio.insecure_channel(target) if traced else raw_aio_channel(target) as channel:
        if shape == UNARY:
            call = channel.unary_unary(shape)(requests[0], metadata=metadata, timeout=10)
        elif shape == STREAM_UNARY:
            call = channel.stream_unary(shape)(gen(), metadata=metadata, timeout=10)
        elif shape == UNARY_STREAM:
            call = channel.unary_stream(shape)(requests[0], metadata=metadata, timeout=10)
        else:
            call = channel.stream_stream(shape)(gen(), metadata=metadata, timeout=10)
        replies: list[bytes] = []
        try:
            if shape in (UNARY, STREAM_UNARY):
                replies.append(await call)
            else:
                async for reply in call:
                    replies.append(reply)
        except grpc.RpcError:
            pass
        return Outcome(await call.code(), replies, dict(await call.trailing_metadata() or ()))
