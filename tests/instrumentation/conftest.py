"""Shared fixtures for the instrumentation tests: the real OTel SDK, PyJWT tokens, and a tiny real gRPC test service.

- ``exporter``: the in-memory exporter of the session's SDK ``TracerProvider`` (OpenTelemetry's sync and aio gRPC
  instrumentors are switched on once per session), cleared for each test.
- ``rsa_key`` / ``mint(**claims)``: an RSA key made once per session, and RS256 tokens with the JIT conventions
  (sub, iss, aud, iat, nbf, exp, jti, grant_id/grant_start/grant_end, and ``perms``, the permissions the test service
  grants); a claim passed as ``None`` is left out; ``key=`` signs with another key.
- ``sync_server``: a grpc server on 127.0.0.1:0 with jitrace's server interceptor (OpenTelemetry's lands before it),
  serving the test service of ``_server_fixtures.py`` in the four shapes; yields its ``host:port``.
- ``aio_server``: a factory of async context managers starting the same service on grpc.aio (use inside
  ``asyncio.run``): ``async with aio_server() as target: ...``.
- ``jitrace_hooks``: PyJWT and pycasbin patched for the test.
- ``every_call_stamped`` (autouse): ``JITRACE_CLOCK_STAMP_INTERVAL_S=0`` for every test, whose calls come within a
  second of each other and check each one's clock stamp; the default interval has tests of its own
  (``test_clock_stamp_interval.py``), which set their settings themselves.

Call helpers (``sync_call``, ``aio_call``, ``call_metadata``, ``server_span``) live in ``_server_fixtures.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import jwt
import pytest
from _server_fixtures import AUDIENCE, ISSUER, Checker, aio_handlers, sync_handlers
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import (
    GrpcAioInstrumentorClient,
    GrpcAioInstrumentorServer,
    GrpcInstrumentorClient,
    GrpcInstrumentorServer,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jitrace.instrumentation import _aio_server, _jwt_hook, _policy, _server, _settings


# --- OpenTelemetry ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def otel() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """The session's SDK provider (the global one) with an in-memory exporter; OTel's gRPC instrumentors on."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentors = [GrpcInstrumentorServer(), GrpcAioInstrumentorServer(), GrpcInstrumentorClient(),
                     GrpcAioInstrumentorClient()]
    started = [i for i in instrumentors if not i.is_instrumented_by_opentelemetry]
    for instrumentor in started:
        instrumentor.instrument(tracer_provider=provider)
    yield provider, memory
    for instrumentor in started:
        instrumentor.uninstrument()


@pytest.fixture
def exporter(otel: tuple[TracerProvider, InMemorySpanExporter]) -> Iterator[InMemorySpanExporter]:
    memory = otel[1]
    memory.clear()
    yield memory
    memory.clear()


@pytest.fixture(autouse=True)
def every_call_stamped() -> Iterator[None]:
    # not through monkeypatch: some tests undo their monkeypatches halfway
    was = _settings.get()
    _settings.configure(dataclasses.replace(was, clock_stamp_interval_s=0.0))
    yield
    _settings.configure(was)


# --- tokens -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def mint(rsa_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    """``mint(**claims)``: an RS256 token valid for 5 minutes, with a grant active for an hour, unless overridden."""

    def make(*, key: Any = None, headers: dict | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300,
            "jti": f"tok-{uuid.uuid4().hex[:12]}", "grant_id": "grant-1", "grant_start": now - 60,
            "grant_end": now + 3600, "perms": ["orders:read"],
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key or rsa_key, algorithm="RS256", headers=headers)

    return make


@pytest.fixture
def jitrace_hooks() -> Iterator[None]:
    """PyJWT and pycasbin patched for the test (idempotent: an instrumentor may already have done it)."""
    was_patched = _jwt_hook.is_patched()
    _jwt_hook.patch()
    _policy.patch_casbin()
    yield
    if not was_patched:
        _jwt_hook.unpatch()
        _policy.unpatch_casbin()


@pytest.fixture
def checker(rsa_key: rsa.RSAPrivateKey) -> Checker:
    return Checker(rsa_key.public_key())


@pytest.fixture
def sync_server(otel: Any, jitrace_hooks: None, checker: Checker) -> Iterator[str]:
    """The test service on a sync grpc server at 127.0.0.1:0 (OTel's interceptor, then jitrace's); its target."""
    pool = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(pool, handlers=[sync_handlers(checker)], interceptors=[_server.server_interceptor()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None).wait(5)
    pool.shutdown(wait=False)


@pytest.fixture
def aio_server(otel: Any, jitrace_hooks: None,
               checker: Checker) -> Callable[[], contextlib.AbstractAsyncContextManager[str]]:
    """``async with aio_server() as target``: the test service on a grpc.aio server (OTel's, then jitrace's)."""

    @contextlib.asynccontextmanager
    async def start() -> AsyncIterator[str]:
        server = grpc.aio.server(handlers=[aio_handlers(checker)],
                                 interceptors=[_aio_server.aio_server_interceptor()])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await server.stop(None)

    return start


