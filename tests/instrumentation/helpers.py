"""The instrumentation tests' helpers (plain functions; the fixtures are in ``conftest.py``, the test service in
``plain_service.py``).

- Tokens: ``mint(**claims)``, an RS256 token with the JIT conventions signed by the process's test key
  (``rsa_key()``, ``public_pem()``); a claim passed as ``None`` is left out, ``key=`` signs with another key.
- Calls through the instrumented channels (``call_sync``, ``call_aio``: jitrace's client side and OpenTelemetry's),
  and through plain grpc channels under every instrumentor (``sync_call``, ``aio_call``: the server side alone).
- Spans: ``traced`` (a call under a fresh root span), ``spans_of``, ``client_span``, ``server_span``, ``jit_attrs``;
  ``server_call`` (a server span with jitrace's call state, as inside a handler, without a server).
- A real OTLP export: ``OtlpReceiver`` and ``run_plain_pair`` (the plain service and client under
  ``opentelemetry-instrument``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import jwt
import plain_service as svc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from jitrace.instrumentation import _call_state
from jitrace.lab import runner


# --- tokens -------------------------------------------------------------------------------------------------------
@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem() -> bytes:
    return rsa_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def mint(*, key: Any = None, headers: dict | None = None, **claims: Any) -> str:
    """An RS256 token for the test service: valid for 5 minutes, granting ``orders:read`` within a grant active for
    an hour, unless ``claims`` say otherwise (``None`` leaves a claim out); ``key``: sign with another key."""
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": "alice", "iss": svc.ISSUER, "aud": svc.AUDIENCE, "iat": now, "nbf": now, "exp": now + 300,
        "jti": f"tok-{uuid.uuid4().hex[:12]}", "grant_id": "grant-1", "grant_start": now - 60,
        "grant_end": now + 3600, "perms": [svc.PERMISSION.decode()],
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key or rsa_key(), algorithm="RS256", headers=headers)


# --- calling the four shapes ------------------------------------------------------------------------------------
def call_sync(channel: grpc.Channel, shape: str, *, metadata: Any = None, credentials: Any = None,
              payload: bytes = svc.PERMISSION, style: str = "call") -> tuple[grpc.StatusCode, Any]:
    """One call of ``shape``; returns (code, reply). Streams are consumed fully."""
    method = svc.SHAPES[shape]
    kw = {"metadata": metadata, "credentials": credentials, "timeout": 10}
    try:
        if shape == "unary":
            mc = channel.unary_unary(method)
            if style == "with_call":
                reply, _ = mc.with_call(payload, **kw)
            elif style == "future":
                reply = mc.future(payload, **kw).result()
            else:
                reply = mc(payload, **kw)
        elif shape == "server_stream":
            reply = list(channel.unary_stream(method)(payload, **kw))
        elif shape == "client_stream":
            mc = channel.stream_unary(method)
            if style == "future":
                reply = mc.future(iter([payload, payload]), **kw).result()
            else:
                reply = mc(iter([payload, payload]), **kw)
        else:
            reply = list(channel.stream_stream(method)(iter([payload, payload]), **kw))
    except grpc.RpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, reply


async def call_aio(channel: grpc.aio.Channel, shape: str, *, metadata: Any = None, credentials: Any = None,
                   payload: bytes = svc.PERMISSION) -> tuple[grpc.StatusCode, Any]:
    method = svc.SHAPES[shape]
    kw = {"metadata": metadata, "credentials": credentials, "timeout": 10}
    try:
        if shape == "unary":
            reply = await channel.unary_unary(method)(payload, **kw)
        elif shape == "server_stream":
            reply = [r async for r in channel.unary_stream(method)(payload, **kw)]
        elif shape == "client_stream":
            reply = await channel.stream_unary(method)(iter([payload, payload]), **kw)
        else:
            reply = [r async for r in channel.stream_stream(method)(iter([payload, payload]), **kw)]
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, reply


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


# --- finding the spans of one call ------------------------------------------------------------------------------
_tracer = trace.get_tracer("jitrace.tests")


def traced(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn`` under a fresh root span; returns (its result, the trace id)."""
    with _tracer.start_as_current_span("test-root") as root:
        result = fn()
    return result, root.get_span_context().trace_id


async def traced_async(fn: Callable[[], Any]) -> tuple[Any, int]:
    with _tracer.start_as_current_span("test-root") as root:
        result = await fn()
    return result, root.get_span_context().trace_id


def spans_of(exporter: InMemorySpanExporter, trace_id: int, kind: SpanKind, *, wait_s: float = 5.0,
             count: int = 1) -> list[ReadableSpan]:
    """The finished spans of ``kind`` in a trace; waits (up to ``wait_s``) for a server span still ending."""
    deadline = time.monotonic() + wait_s
    while True:
        found = [s for s in exporter.get_finished_spans()
                 if s.context.trace_id == trace_id and s.kind is kind]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def client_span(exporter: InMemorySpanExporter, trace_id: int) -> ReadableSpan:
    spans = spans_of(exporter, trace_id, SpanKind.CLIENT)
    assert len(spans) == 1, f"expected one client span, got {[s.name for s in spans]}"
    return spans[0]


def root_span(exporter: InMemorySpanExporter, trace_id: int) -> ReadableSpan:
    roots = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id and s.name == "test-root"]
    assert len(roots) == 1
    return roots[0]


def jit_attrs(span: ReadableSpan) -> dict[str, Any]:
    return {k: v for k, v in (span.attributes or {}).items() if k.startswith("jit.")}


@contextlib.contextmanager
def server_call(exporter: InMemorySpanExporter) -> Iterator[list[ReadableSpan]]:
    """A real server span with jitrace's call state, as inside a handler; yields where its finished span lands."""
    finished: list[ReadableSpan] = []
    with trace.get_tracer("test").start_as_current_span("/svc/Method", kind=trace.SpanKind.SERVER) as span:
        token = _call_state.activate(_call_state.CallState(span=span, arrival_ns=span.start_time))
        try:
            yield finished
        finally:
            _call_state.deactivate(token)
    finished.extend(s for s in exporter.get_finished_spans() if s.name == "/svc/Method")


# --- spans of the server side ---------------------------------------------------------------------------------
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
    return [svc.PERMISSION] if shape in (svc.UNARY, svc.UNARY_STREAM) else [svc.PERMISSION, b"more"]


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
            if shape == svc.UNARY:
                reply, call = channel.unary_unary(shape).with_call(requests[0], metadata=metadata, timeout=10)
                return Outcome(call.code(), [reply], dict(call.trailing_metadata() or ()))
            if shape == svc.STREAM_UNARY:
                reply, call = channel.stream_unary(shape).with_call(iter(requests), metadata=metadata, timeout=10)
                return Outcome(call.code(), [reply], dict(call.trailing_metadata() or ()))
            if shape == svc.UNARY_STREAM:
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
        if shape == svc.UNARY:
            call = channel.unary_unary(shape)(requests[0], metadata=metadata, timeout=10)
        elif shape == svc.STREAM_UNARY:
            call = channel.stream_unary(shape)(gen(), metadata=metadata, timeout=10)
        elif shape == svc.UNARY_STREAM:
            call = channel.unary_stream(shape)(requests[0], metadata=metadata, timeout=10)
        else:
            call = channel.stream_stream(shape)(gen(), metadata=metadata, timeout=10)
        replies: list[bytes] = []
        try:
            if shape in (svc.UNARY, svc.STREAM_UNARY):
                replies.append(await call)
            else:
                async for reply in call:
                    replies.append(reply)
        except grpc.RpcError:
            pass
        return Outcome(await call.code(), replies, dict(await call.trailing_metadata() or ()))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- a real OTLP export: an in-test OTLP/gRPC receiver and the plain scripts under opentelemetry-instrument ---------
HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
FAKETIME_LIB = runner.faketime_library()  # the system's, else the PyPI package's (a dev dependency)


class OtlpReceiver:
    """The OTLP/gRPC trace service, keeping every request's raw bytes as they arrived."""

    def __init__(self, port: int = 0) -> None:
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def export(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.raw.append(request)
            return b""  # an empty ExportTraceServiceResponse

        handler = grpc.unary_unary_rpc_method_handler(export)  # no (de)serializers: bytes in, bytes out
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("opentelemetry.proto.collector.trace.v1.TraceService",
                                                  {"Export": handler}),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")  # a given port: a collector coming back
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None)

    def spans(self) -> list[dict[str, Any]]:
        """Every exported span as {service, name, kind, trace_id, attributes}."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = []
        with self._lock:
            raw = list(self.raw)
        for body in raw:
            for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
                resource = {kv.key: _any_value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.append({
                            "service": resource.get("service.name"),
                            "name": span.name,
                            "kind": {2: "server", 3: "client"}.get(span.kind, "other"),
                            "trace_id": span.trace_id.hex(),
                            "attributes": {kv.key: _any_value(kv.value) for kv in span.attributes},
                        })
        return out


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def run_plain_pair(tmp: Path, tokens: dict[str, str | None], *, env: dict[str, str] | None = None,
                   server_env: dict[str, str] | None = None, aio: bool = False,
                   timeout_s: float = 90) -> tuple[OtlpReceiver, list[dict], str]:
    """Run plain_service.py and plain_client.py under ``opentelemetry-instrument``, exporting to a receiver here.

    Returns (the receiver, the client's result rows, both processes' stdout+stderr).
    """
    receiver = OtlpReceiver()
    (tmp / "public.pem").write_bytes(public_pem())
    (tmp / "tokens.json").write_text(json.dumps(tokens))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JITRACE_"))}
    base.update({
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "JIT_PUBLIC_KEY_FILE": str(tmp / "public.pem"),
        "JIT_TOKENS": str(tmp / "tokens.json"),
        "JIT_AIO": "1" if aio else "0",
        "PYTHONUNBUFFERED": "1",
    })
    base.update(env or {})
    instrument = [str(VENV_BIN / "opentelemetry-instrument"), sys.executable]
    server_proc = subprocess.Popen(
        [*instrument, str(HERE / "plain_service.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**base, "OTEL_SERVICE_NAME": "jit-server", **(server_env or {})})
    killer = threading.Timer(timeout_s, server_proc.kill)  # whatever happens, the server does not outlive us
    killer.start()
    try:
        port_line = server_proc.stdout.readline().decode().strip()
        assert port_line.isdigit(), f"server did not start: {port_line!r} {server_proc.stderr.read().decode()[-2000:]}"
        client = subprocess.run(
            [*instrument, str(HERE / "plain_client.py")], capture_output=True, timeout=timeout_s,
            env={**base, "OTEL_SERVICE_NAME": "jit-client", "JIT_TARGET": f"127.0.0.1:{port_line}"})
    finally:
        try:  # communicate() closes the server's stdin: that stops it
            server_out, server_err = server_proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            server_proc.kill()
            server_out, server_err = server_proc.communicate()
        killer.cancel()
        receiver.stop()
    output = "\n".join(x.decode(errors="replace") for x in (client.stdout, client.stderr, server_out, server_err))
    assert client.returncode == 0, output[-3000:]
    rows = [json.loads(line) for line in client.stdout.decode().splitlines() if line.startswith("{")]
    return receiver, rows, output
