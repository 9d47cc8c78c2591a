"""Fixtures of the client tests: the real SDK with an in-memory exporter, OpenTelemetry's gRPC instrumentors and
jitrace switched on once per process, RSA-signed tokens minted at test time, and the plain test service.

Everything here is idempotent per process (``functools.cache``) so it coexists with ``conftest.py``'s fixtures:
whoever sets the global TracerProvider first, this module adds its own exporter to it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import jwt
import plain_service as ps
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from jitrace.instrumentation import contract as c
from jitrace.lab import runner


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem() -> bytes:
    return rsa_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def mint(**claims: Any) -> str:
    """An RS256 token for the test service; defaults: valid for 5 minutes, role reader, a 10-minute grant."""
    now = int(time.time())
    body = {
        "sub": "alice",
        "iss": ps.ISSUER,
        "aud": ps.AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "roles": ["reader"],
        "grant_id": "grant-" + uuid.uuid4().hex[:8],
        "grant_start": now - 60,
        "grant_end": now + 600,
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, rsa_key(), algorithm="RS256")


@functools.cache
def telemetry() -> InMemorySpanExporter:
    """Real SDK + OpenTelemetry's four gRPC instrumentors + jitrace (instrumented after OTel: the harder order)."""
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
        GrpcInstrumentorClient,
        GrpcInstrumentorServer,
    )

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for instrumentor in (GrpcInstrumentorClient, GrpcInstrumentorServer, GrpcAioInstrumentorClient,
                         GrpcAioInstrumentorServer):
        if not instrumentor().is_instrumented_by_opentelemetry:
            instrumentor().instrument()
    import jitrace.instrumentation as ji

    ji.instrument()
    return exporter


@functools.cache
def sync_service() -> tuple[int, int]:
    """The plain service on a sync server (instrumented): (insecure port, local-credentials port). Lives for the
    whole test process (grpc stops it at exit)."""
    telemetry()
    server, port, secure_port = ps.serve_sync(ps.Verifier(public_pem()))
    _servers.append(server)
    return port, secure_port


_servers: list[Any] = []


@pytest.fixture(scope="session")
def client_exporter() -> InMemorySpanExporter:
    return telemetry()


@pytest.fixture
def exporter(client_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    client_exporter.clear()
    return client_exporter


@pytest.fixture(scope="session")
def service_ports() -> tuple[int, int]:
    return sync_service()


@pytest.fixture
def channel(service_ports: tuple[int, int]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{service_ports[0]}") as ch:
        yield ch


@pytest.fixture
def secure_channel(service_ports: tuple[int, int]) -> Iterator[grpc.Channel]:
    creds = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    with grpc.secure_channel(f"127.0.0.1:{service_ports[1]}", creds) as ch:
        yield ch


# --- calling the four shapes ------------------------------------------------------------------------------------
def call_sync(channel: grpc.Channel, shape: str, *, metadata: Any = None, credentials: Any = None,
              payload: bytes = b"ping", style: str = "call") -> tuple[grpc.StatusCode, Any]:
    """One call of ``shape``; returns (code, reply). Streams are consumed fully."""
    method = ps.SHAPES[shape]
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
                   payload: bytes = b"ping") -> tuple[grpc.StatusCode, Any]:
    method = ps.SHAPES[shape]
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


def server_side_present() -> bool:
    """Whether the server engineer's interceptor is in (it echoes ``jit-clock``)."""
    try:
        import jitrace.instrumentation._server  # noqa: F401
    except ImportError:
        return False
    return True


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


__all__ = [
    "c", "call_aio", "call_sync", "channel", "client_exporter", "client_span", "exporter", "jit_attrs", "mint",
    "bearer", "root_span", "run", "secure_channel", "server_side_present", "service_ports", "spans_of", "traced",
    "traced_async",
]
