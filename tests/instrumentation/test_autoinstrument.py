"""No code changes: a plain server and a plain client (no OpenTelemetry or jitrace code) run under
``opentelemetry-instrument`` with OTEL_* variables, export over OTLP to a receiver here, and their spans carry the
``jit.*`` facts. ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=jitrace`` turns jitrace off; libfaketime shows the
in-band clock estimate finding a real skew."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import FAKETIME_LIB, HERE, mint, public_pem, run_plain_pair

from jitrace.instrumentation import contract as c
from jitrace.instrumentation._token import hash_value

pytestmark = pytest.mark.slow

EXPECTED = {"allowed": "OK", "expired": "UNAUTHENTICATED", "missing": "UNAUTHENTICATED",
            "forbidden": "PERMISSION_DENIED"}
REASONS = {"expired": "TOKEN_EXPIRED", "missing": "TOKEN_MISSING", "forbidden": "PERMISSION_MISSING"}


def _tokens() -> dict[str, str | None]:
    now = int(time.time())
    return {"allowed": mint(jti="auto-allowed"), "expired": mint(jti="auto-expired", iat=now - 900, exp=now - 60),
            "missing": None, "forbidden": mint(jti="auto-forbidden", perms=["orders:write"])}


def _by_trace(spans: list[dict]) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for span in spans:
        if span["kind"] in ("client", "server") and span["name"].startswith("/jit.test.Echo/"):
            out.setdefault(span["trace_id"], {})[span["kind"]] = span
    return out


def _case_of(attrs: dict) -> str:
    if attrs.get(c.TOKEN_PRESENT) is False:
        return "missing"
    return attrs[c.TOKEN_ID].removeprefix("auto-")


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "aio"])
def test_plain_apps_under_opentelemetry_instrument_carry_jit_facts(tmp_path, aio):
    receiver, rows, _ = run_plain_pair(tmp_path, _tokens(), aio=aio)
    assert {(r["case"], r["code"]) for r in rows} == set(EXPECTED.items())
    assert len(rows) == 16

    pairs = _by_trace(receiver.spans())
    assert len(pairs) == 16
    shapes = set()
    stamps = []
    for pair in pairs.values():
        client = pair["client"]
        attrs = client["attributes"]
        assert client["service"] == "jit-client"
        case = _case_of(attrs)
        shapes.add((case, client["name"]))
        assert attrs[c.RPC_GRPC_STATUS_CODE] == {"OK": 0, "UNAUTHENTICATED": 16, "PERMISSION_DENIED": 7}[
            EXPECTED[case]]
        assert attrs.get(c.DENIAL_REASON) == REASONS.get(case)
        assert c.CLOCK_SENT_NS in attrs
        if case != "missing":
            assert attrs[c.TOKEN_ISS] == "jit-issuer" and c.TOKEN_TTL_S in attrs and c.GRANT_ID in attrs
        server = pair["server"]
        assert server["service"] == "jit-server"
        assert server["attributes"][c.TOKEN_PRESENT] is (case != "missing")
        assert c.CLOCK_RECEIVED_NS in server["attributes"]
        # the default interval (1 s): the calls that carried a clock stamp got the echo, and only they
        if c.CLOCK_PEER_SENT_NS in server["attributes"]:
            assert server["attributes"][c.CLOCK_PEER_SENT_NS] == attrs[c.CLOCK_SENT_NS]
            stamps.append(attrs[c.CLOCK_SENT_NS])
            # one host, one clock: the estimate is within its own error bound (half the delay; a channel's
            # first call also carries the connection set-up, so no fixed threshold)
            assert attrs[c.CLOCK_DELAY_S] >= 0
            assert abs(attrs[c.CLOCK_OFFSET_S]) <= attrs[c.CLOCK_DELAY_S] / 2 + 0.01
        else:
            assert c.CLOCK_OFFSET_S not in attrs and c.CLOCK_DELAY_S not in attrs
    assert len(shapes) == 16  # every case in every shape
    stamps.sort()
    assert stamps and stamps[0] == min(p["client"]["attributes"][c.CLOCK_SENT_NS] for p in pairs.values())
    assert all(later - earlier >= 0.95e9 for earlier, later in zip(stamps, stamps[1:], strict=False)), stamps


def test_disabled_instrumentations_turn_jitrace_off(tmp_path):
    receiver, rows, _ = run_plain_pair(tmp_path, _tokens(), env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "jitrace"})
    assert {(r["case"], r["code"]) for r in rows} == set(EXPECTED.items())  # calls behave the same
    spans = [s for s in receiver.spans() if s["name"].startswith("/jit.test.Echo/")]
    assert {s["kind"] for s in spans} == {"client", "server"}  # OpenTelemetry's own spans are still there
    assert [s for s in spans if any(k.startswith("jit.") for k in s["attributes"])] == []


def test_jitrace_enabled_false_turns_it_off_too(tmp_path):
    receiver, rows, _ = run_plain_pair(tmp_path, {"allowed": mint()}, env={"JITRACE_ENABLED": "false"})
    spans = [s for s in receiver.spans() if s["name"].startswith("/jit.test.Echo/")]
    assert len(spans) == 8 and all(not any(k.startswith("jit.") for k in s["attributes"]) for s in spans)


@pytest.mark.parametrize("interval", [None, "0"], ids=["default-interval", "every-call"])
def test_a_server_clock_five_seconds_ahead_is_measured(tmp_path, interval):
    assert FAKETIME_LIB is not None, "libfaketime: neither the system's nor the PyPI package's is installed"
    skew = {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": "+5s", "DONT_FAKE_MONOTONIC": "1"}
    env = {} if interval is None else {"JITRACE_CLOCK_STAMP_INTERVAL_S": interval}
    receiver, rows, _ = run_plain_pair(tmp_path, {"allowed": mint()}, env=env, server_env=skew)
    assert {r["code"] for r in rows} == {"OK"}
    samples = [(s["attributes"][c.CLOCK_OFFSET_S], s["attributes"][c.CLOCK_DELAY_S]) for s in receiver.spans()
               if s["kind"] == "client" and c.CLOCK_OFFSET_S in s["attributes"]]
    # four calls: each stamped with interval 0; with the default (1 s) the first, and one a second after it
    assert len(samples) == 4 if interval == "0" else 1 <= len(samples) <= 4
    # the true +5 s lies within each estimate's error bound (half its delay: NTP's guarantee) ...
    assert all(abs(offset - 5) <= delay / 2 + 0.05 for offset, delay in samples), samples
    # ... and the best sample (lowest delay, as the analyzer picks) is close
    best_offset, best_delay = min(samples, key=lambda sample: sample[1])
    assert best_delay < 1 and abs(best_offset - 5) < 0.5, samples


ORDER_SCRIPT = textwrap.dedent('''
    import asyncio, json, sys
    sys.path.insert(0, sys.argv[1])
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, GrpcAioInstrumentorClient
    import jitrace.instrumentation as ji
    import grpc, grpc.aio, plain_service as svc

    provider = TracerProvider(); exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter)); trace.set_tracer_provider(provider)
    ji.instrument(hash_subject=True)      # jitrace FIRST, OpenTelemetry after: jitrace must still be inside
    GrpcInstrumentorClient().instrument()
    GrpcAioInstrumentorClient().instrument()
    server, port, _ = svc.serve_sync(svc.Verifier(open(sys.argv[2], "rb").read()))
    md = (("authorization", "Bearer " + sys.argv[3]),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        ch.unary_unary(svc.UNARY)(svc.PERMISSION, metadata=md, timeout=10)

    async def aio_call():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            await ch.unary_unary(svc.UNARY)(svc.PERMISSION, metadata=md, timeout=10)

    asyncio.run(aio_call())
    ji.uninstrument()                     # and off again: a new channel carries no jitrace facts
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        ch.unary_unary(svc.UNARY)(svc.PERMISSION, metadata=md, timeout=10)
    server.stop(None)
    print(json.dumps([{k: v for k, v in s.attributes.items() if k.startswith("jit.")}
                      for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]))
''')


def test_jitrace_instrumented_before_opentelemetry_still_lands_inside(tmp_path):
    (tmp_path / "public.pem").write_bytes(public_pem())
    token = mint(jti="order-1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", ORDER_SCRIPT, str(HERE), str(tmp_path / "public.pem"), token],
                          capture_output=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    sync_call, aio_call, after_uninstrument = json.loads(done.stdout.decode().strip().splitlines()[-1])
    for attrs in (sync_call, aio_call):
        assert attrs[c.TOKEN_ID] == "order-1" and c.CLOCK_SENT_NS in attrs
        assert attrs[c.TOKEN_SUB] == hash_value("alice")  # instrument(hash_subject=True) overrides the env
    assert after_uninstrument == {}
