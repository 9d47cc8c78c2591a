"""Where jitrace joins grpc: after OpenTelemetry's interceptors and before the user's, whatever the order of the
instrumentors; the pre-instrument hook honours the switches that turn jitrace off."""

from __future__ import annotations

from concurrent import futures

import grpc
import grpc.aio
import helpers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jitrace.instrumentation import _hooks, _pre_instrument


class _Otel:  # stands in for an OpenTelemetry interceptor: only its module matters to the placement
    pass


class _Jit:
    pass


class _User:
    pass


_Otel.__module__ = "opentelemetry.instrumentation.grpc._server"
_Jit.__module__ = "jitrace.instrumentation._server"


@given(before=st.integers(0, 3), users=st.integers(0, 3))
def test_place_puts_jitrace_after_opentelemetry_and_before_the_user(before, users):
    existing = [_Otel() for _ in range(before)] + [_User() for _ in range(users)]
    ours = _Jit()
    placed = _hooks.place(list(existing), [ours])
    assert placed == existing[:before] + [ours] + existing[before:]
    assert _hooks.place(placed, [_Jit()]) == placed  # never twice


def _server_interceptor_modules(server: grpc.Server) -> list[str]:
    pipeline = server._state.interceptor_pipeline
    return [type(i).__module__.split(".")[0] for i in pipeline.interceptors]


class UserServerInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        return continuation(handler_call_details)


@pytest.mark.parametrize("positional", [False, True])
def test_sync_server_interceptors_in_order(otel, positional):
    pool = futures.ThreadPoolExecutor(max_workers=1)
    if positional:
        server = grpc.server(pool, None, [UserServerInterceptor()])
    else:
        server = grpc.server(pool, interceptors=[UserServerInterceptor()])
    try:
        modules = _server_interceptor_modules(server)
    finally:
        server.stop(None)
        pool.shutdown(wait=False)
    # (positional: OpenTelemetry's wrapper alone would fail with "multiple values for 'interceptors'"; jitrace,
    # instrumented after it here, passes them on as a keyword)
    assert modules == ["opentelemetry", "jitrace", "test_client_hooks"]


@pytest.mark.parametrize("positional", [False, True])
def test_aio_channel_interceptors_in_order(otel, positional):
    class UserInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, details, request):
            return await continuation(details, request)

    async def go():
        if positional:
            channel = grpc.aio.insecure_channel("127.0.0.1:1", None, None, [UserInterceptor()])
        else:
            channel = grpc.aio.insecure_channel("127.0.0.1:1", interceptors=[UserInterceptor()])
        async with channel:
            return [type(i).__module__.split(".")[0] for i in channel._unary_unary_interceptors]

    assert helpers.run(go()) == ["opentelemetry", "jitrace", "test_client_hooks"]


def test_channels_inactive_hooks_pass_through(otel):
    saved = dict(_hooks._active)
    _hooks._active.update(client=False)
    try:
        channel = grpc.insecure_channel("127.0.0.1:1")
    finally:
        _hooks._active.update(saved)
    assert type(channel._channel).__module__ == "grpc._channel"  # OpenTelemetry's wrapper around grpc's own
    channel.close()


@pytest.mark.parametrize(
    ("env", "disabled"),
    [
        ({}, False),
        ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "jitrace"}, True),
        ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests, jitrace ,flask"}, True),
        ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"}, True),
        ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "jitrace-other"}, False),
    ],
)
def test_pre_instrument_honours_disabled_instrumentations(env, disabled):
    assert _pre_instrument.disabled_by_environment(env) is disabled


def test_pre_instrument_honours_jitrace_enabled(monkeypatch):
    from jitrace.instrumentation import _settings

    monkeypatch.setattr(_settings, "_current", _settings.Settings(enabled=False))
    assert _pre_instrument.disabled_by_environment({}) is True


def test_public_api_is_lazy_and_complete():
    """Importing the package (and its contract) loads neither grpc nor the SDK; every public name resolves."""
    import subprocess
    import sys

    code = (
        "import sys, jitrace.instrumentation as ji, jitrace.instrumentation.contract\n"
        "assert not any(m == 'grpc' or m.startswith(('grpc.', 'opentelemetry.sdk')) for m in sys.modules), 'eager'\n"
        "names = sorted(ji.__all__)\n"
        "assert all(callable(getattr(ji, n)) for n in names)\n"
        "print(','.join(names))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().split(",") == sorted([
        "JitraceInstrumentor", "instrument", "uninstrument", "record_policy_decision", "record_issue",
        "bearer_credentials", "refreshing_credentials", "failure_counts"])


CYCLE_SCRIPT = """
import grpc, grpc.aio
from opentelemetry.instrumentation.grpc import (GrpcAioInstrumentorClient, GrpcAioInstrumentorServer,
                                                GrpcInstrumentorClient, GrpcInstrumentorServer)
import jitrace.instrumentation as ji

class UserInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        return continuation(handler_call_details)

for i in (GrpcInstrumentorClient, GrpcAioInstrumentorClient, GrpcInstrumentorServer, GrpcAioInstrumentorServer):
    i().instrument()
raw = grpc.insecure_channel.__wrapped__
out = []
for _ in range(3):
    for switch in (ji.instrument, ji.uninstrument):
        switch()
        ch = grpc.insecure_channel("127.0.0.1:1")
        out.append(type(ch._channel).__name__)
        ch.close()
        server = grpc.server(None, interceptors=[])
        out.append(",".join(type(i).__module__.split(".")[0] for i in server._state.interceptor_pipeline.interceptors))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "svc", {"M": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}),))
        (handler,) = server._state.generic_handlers[-1]._method_handlers.values()
        out.append(handler.unary_unary.__module__.split(".")[0])
        user = grpc.server(None, interceptors=[UserInterceptor()])
        out.append(",".join(type(i).__module__.split(".")[0] for i in user._state.interceptor_pipeline.interceptors))
GrpcInstrumentorClient().uninstrument()
assert grpc.insecure_channel is raw, grpc.insecure_channel  # OpenTelemetry's own unwrap still works
print("|".join(out))
"""


def test_instrument_and_uninstrument_cycle_cleanly():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", CYCLE_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    # a server with no interceptor of its own: jitrace's handlers, no interceptor of jitrace's; one with its own:
    # jitrace's interceptor between OpenTelemetry's and the service's
    on = ["JitraceChannel", "opentelemetry", "jitrace", "opentelemetry,jitrace,__main__"]
    off = ["Channel", "opentelemetry", "__main__", "opentelemetry,__main__"]
    assert done.stdout.strip().split("|") == (on + off) * 3


RESTORE_SCRIPT = """
import inspect, sys
import casbin, grpc, grpc._server, grpc.aio, jwt, jwt.api_jwt, wrapt
from opentelemetry.instrumentation.grpc import (GrpcAioInstrumentorClient, GrpcAioInstrumentorServer,
                                                GrpcInstrumentorClient, GrpcInstrumentorServer)
import jitrace.instrumentation as ji

PLACES = [(grpc, n) for n in ("insecure_channel", "secure_channel", "composite_call_credentials",
                              "composite_channel_credentials", "server")]
PLACES += [(grpc.aio, n) for n in ("insecure_channel", "secure_channel", "server")]
PLACES += [(jwt.api_jwt.PyJWT, n) for n in ("decode", "decode_complete")]
PLACES += [(m, n) for m in (jwt, jwt.api_jwt) for n in ("decode", "decode_complete")]
PLACES += [(casbin.Enforcer, n) for n in ("enforce", "enforce_ex")]
PLACES += [(grpc._server._Server, n) for n in ("add_generic_rpc_handlers", "add_registered_method_handlers")]

def chain(value):  # the stored value and every wrapt wrapper under it (OpenTelemetry wraps sync channels so)
    links = [value]
    while isinstance(links[-1], wrapt.FunctionWrapper):
        links.append(links[-1].__wrapped__)
    return links

def stored():
    return [chain(inspect.getattr_static(owner, name)) for owner, name in PLACES]

def same(a, b):
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))

otel = [GrpcInstrumentorClient(), GrpcAioInstrumentorClient(), GrpcInstrumentorServer(), GrpcAioInstrumentorServer()]
if sys.argv[1] == "otel-first":
    for i in otel:
        i.instrument()
before, owned = stored(), [name in vars(owner) for owner, name in PLACES]
ji.instrument()
during = stored()
changed = [f"{owner.__name__}.{name}" for (owner, name), a, b in zip(PLACES, before, during) if not same(a, b)]
ji.uninstrument()
after = stored()
kept = [f"{owner.__name__}.{name}" for (owner, name), a, b in zip(PLACES, before, after) if not same(a, b)]
print(len(changed), ",".join(kept) or "-", [name in vars(owner) for owner, name in PLACES] == owned)
"""


@pytest.mark.parametrize("order", ["otel-first", "jitrace-alone"])
def test_uninstrument_restores_every_function_it_patched(order):
    """Every function jitrace wraps (grpc's constructors and composers, PyJWT's decode, pycasbin's enforce) is the
    very object it was before ``instrument()`` once ``uninstrument()`` ran, with OpenTelemetry's wrappers or none."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", RESTORE_SCRIPT, order], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    changed, kept, owned_again = done.stdout.split()
    # 8 grpc functions and the sync server's 2 handler registrations, PyJWT's class method and its two module
    # functions, pycasbin's two methods
    assert int(changed) == 15
    assert kept == "-"  # nothing left behind
    assert owned_again == "True"  # an inherited method (pycasbin's) is inherited again
