"""The instrumentation tests' fixtures (the one place they are defined): the real OTel SDK, real signed tokens, and the
test service (``plain_service.py``) on real loopback servers. Plain helpers are in ``helpers.py``.

- ``otel``: the session's SDK ``TracerProvider`` (the global one) with an in-memory exporter; OpenTelemetry's sync and
  aio gRPC instrumentors, then jitrace (``instrument()`` after OpenTelemetry: the harder order), switched on once.
- ``exporter``: that in-memory exporter, cleared for each test.
- ``rsa_key`` / ``mint``: the process's RSA test key, and ``helpers.mint`` (RS256 tokens with the JIT conventions).
- ``verifier``: the test service's access check, recording its decisions with ``record_policy_decision``.
- ``service_ports``: the test service on a sync grpc server, started once per session (no interceptor of its own:
  the instrumentor wraps its handlers, inside OpenTelemetry's interceptor): (insecure port, local-credentials
  port); ``sync_server`` is its ``host:port``, ``channel`` / ``secure_channel`` instrumented channels to it.
- ``aio_server``: a factory of async context managers starting the same service on grpc.aio (use inside
  ``asyncio.run``): ``async with aio_server() as target: ...``.
- ``jitrace_hooks``: PyJWT and pycasbin patched for the test (idempotent).
- ``every_call_stamped`` (autouse): ``JITRACE_CLOCK_STAMP_INTERVAL_S=0`` for every test, whose calls come within a
  second of each other and check each one's clock stamp; the default interval has tests of its own
  (``test_clock_stamp_interval.py``), which set their settings themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import helpers
import plain_service as svc
import pytest
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

import jitrace.instrumentation as ji
from jitrace.instrumentation import _jwt_hook, _policy, _settings, record_policy_decision


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
    ji.instrument()
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
    return helpers.rsa_key()


@pytest.fixture(scope="session")
def mint() -> Callable[..., str]:
    """``mint(**claims)``: :func:`helpers.mint`."""
    return helpers.mint


@pytest.fixture
def jitrace_hooks() -> Iterator[None]:
    """PyJWT and pycasbin patched for the test (idempotent: the instrumentor has done it already)."""
    was_patched = _jwt_hook.is_patched()
    _jwt_hook.patch()
    _policy.patch_casbin()
    yield
    if not was_patched:
        _jwt_hook.unpatch()
        _policy.unpatch_casbin()


# --- the test service -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def verifier(rsa_key: rsa.RSAPrivateKey) -> svc.Verifier:
    return svc.Verifier(rsa_key.public_key(), record=record_policy_decision)


@pytest.fixture(scope="session")
def service_ports(otel: Any, verifier: svc.Verifier) -> Iterator[tuple[int, int]]:
    """The test service on a sync server (instrumented): (insecure port, local-credentials port)."""
    server, port, secure_port = svc.serve_sync(verifier)
    yield port, secure_port
    server.stop(None).wait(5)


@pytest.fixture
def sync_server(service_ports: tuple[int, int], jitrace_hooks: None) -> str:
    return f"127.0.0.1:{service_ports[0]}"


@pytest.fixture
def channel(service_ports: tuple[int, int]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{service_ports[0]}") as ch:
        yield ch


@pytest.fixture
def secure_channel(service_ports: tuple[int, int]) -> Iterator[grpc.Channel]:
    creds = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    with grpc.secure_channel(f"127.0.0.1:{service_ports[1]}", creds) as ch:
        yield ch


@pytest.fixture
def aio_server(otel: Any, jitrace_hooks: None,
               verifier: svc.Verifier) -> Callable[[], contextlib.AbstractAsyncContextManager[str]]:
    """``async with aio_server() as target``: the test service on a grpc.aio server (OTel's, then jitrace's)."""

    @contextlib.asynccontextmanager
    async def start() -> AsyncIterator[str]:
        server, port, _ = await svc.serve_aio(verifier)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await server.stop(None)

    return start
