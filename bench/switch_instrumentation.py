"""jitrace's cost per call measured in one process, its work switched on and off block by block (paired).

Not part of ``make bench``: the tool for pricing one change at a time on a busy machine. One process runs
OpenTelemetry's gRPC interceptors, two loopback servers (OpenTelemetry's interceptor with jitrace's after it, and
OpenTelemetry's alone) and a channel of each kind (jitrace's channel under OpenTelemetry's interceptor, or
OpenTelemetry's alone) to each, placed as the instrumentor places them; the handler verifies an RS256 JWT. A block
of calls goes through the channel and server a configuration names, with the PyJWT hook patched or not and the
configuration's settings. Short blocks of the two configurations compared alternate (the order flips every round,
and every other round the calls go through a second instance of each server and channel), so what the machine does
meanwhile, and a bias of one server instance, fall on both alike; each round gives one paired difference of median
latency and of CPU per call (process CPU time over the block's calls: client, server, every thread). The result is
the median difference over the rounds with a 95% bootstrap interval, and the pooled ratio.

    python -m bench.switch_instrumentation both            # jitrace (both sides) on vs OpenTelemetry alone
    python -m bench.switch_instrumentation client server stamps aa

Comparisons: ``both``, ``client``, ``server`` (jitrace on vs OpenTelemetry alone), ``stamps`` (a clock stamp on
every call, ``JITRACE_CLOCK_STAMP_INTERVAL_S=0``, vs the default interval), ``aa`` (off vs off: the tool's own noise
floor). With ``--base DIR`` (DIR holds a package ``jitrace_base``: another revision's ``instrumentation/`` with its
imports renamed), ``new-vs-base`` compares both sides of this tree's jitrace with both sides of that one in the same
process, through servers and channels the two share (a dispatching interceptor and channel pick the revision per
block), and ``base`` prices that revision on vs off:

    git archive HEAD~3 instrumentation | tar -x -C /tmp/base && mv /tmp/base/instrumentation /tmp/base/jitrace_base
    grep -rl jitrace.instrumentation /tmp/base | xargs sed -i 's/jitrace\\.instrumentation/jitrace_base/g'
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import statistics
import sys
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from bench.jwt_token import bench_token


@dataclass(frozen=True)
class Config:
    client: bool
    server: bool
    settings: tuple[tuple[str, Any], ...] = ()  # Settings fields on top of the defaults
    impl: str = "new"  # "new": this tree's jitrace; "base": the one given with --base
    shared: bool = False  # through the servers and channels both revisions share (see Rig)


INSTANCES = (0, 1)
OFF = Config(client=False, server=False)
ON = Config(client=True, server=True)
COMPARISONS: dict[str, tuple[Config, Config]] = {
    "both": (ON, OFF),
    "client": (Config(client=True, server=False), OFF),
    "server": (Config(client=False, server=True), OFF),
    "stamps": (Config(client=True, server=True, settings=(("clock_stamp_interval_s", 0.0),)), ON),
    "aa": (OFF, OFF),
    "new-vs-base": (Config(client=True, server=True, shared=True),
                    Config(client=True, server=True, impl="base", shared=True)),
    "base-vs-new": (Config(client=True, server=True, impl="base", shared=True),
                    Config(client=True, server=True, shared=True)),
    "base": (Config(client=True, server=True, impl="base"), OFF),
}


class _Impl:
    """One revision of jitrace's instrumentation: its modules, and its settings objects by configuration."""

    def __init__(self, package: str) -> None:
        self.client = importlib.import_module(f"{package}._client")
        self.server = importlib.import_module(f"{package}._server")
        self.jwt_hook = importlib.import_module(f"{package}._jwt_hook")
        self.settings = importlib.import_module(f"{package}._settings")
        self._cache: dict[tuple[tuple[str, Any], ...], Any] = {}

    def settings_for(self, fields: tuple[tuple[str, Any], ...]) -> Any:
        # one object per configuration: jitrace's caches are keyed by the settings object
        if fields not in self._cache:
            self._cache[fields] = self.settings.Settings(**dict(fields))
        return self._cache[fields]


class _Dispatch(grpc.ServerInterceptor):
    """Where both revisions share a server: the revision of jitrace in use (``current``) intercepts the call."""

    def __init__(self, interceptors: dict[str, Any]) -> None:
        self.interceptors = interceptors
        self.current = "new"

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        return self.interceptors[self.current].intercept_service(continuation, handler_call_details)


class _DispatchCall:
    """Where both revisions share a channel: the revision in use (``current``) makes the call."""

    def __init__(self, calls: dict[str, Any]) -> None:
        self.calls = calls
        self.current = "new"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.calls[self.current](*args, **kwargs)


class _DispatchChannel:
    """A raw channel under each revision's JitraceChannel; OpenTelemetry's interceptor over it gets a
    :class:`_DispatchCall` per method."""

    def __init__(self, channels: dict[str, Any], dispatches: list[_DispatchCall]) -> None:
        self.channels = channels
        self.dispatches = dispatches

    def unary_unary(self, *args: Any, **kwargs: Any) -> _DispatchCall:
        dispatch = _DispatchCall({name: ch.unary_unary(*args, **kwargs) for name, ch in self.channels.items()})
        self.dispatches.append(dispatch)
        return dispatch


class Rig:
    """OpenTelemetry's interceptors; servers and channels for every (jitrace revision, client, server) combination."""

    def __init__(self, base: bool = False) -> None:
        import grpc
        import jwt
        from opentelemetry import trace
        from opentelemetry.instrumentation.grpc import client_interceptor, server_interceptor
        from opentelemetry.instrumentation.grpc.grpcext import intercept_channel
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
        self.impls = {"new": _Impl("jitrace.instrumentation")}
        if base:
            self.impls["base"] = _Impl("jitrace_base")
        token, public = bench_token(7200)
        self.metadata = (("authorization", "Bearer " + token),)

        def unary(request: bytes, context: Any) -> bytes:
            auth = dict(context.invocation_metadata()).get("authorization", "")
            jwt.decode(auth.removeprefix("Bearer "), public, algorithms=["RS256"], audience="bench",
                       issuer="jit-issuer")
            return request

        # Two instances of each server and channel: a round's blocks go through one instance pair (the other
        # next round), so that a bias of one server instance (where its threads run) falls on both configurations.
        self.servers: list[Any] = []
        ports: dict[tuple[str | None, int], int] = {}
        for impl in (None, *self.impls):  # None: OpenTelemetry alone
            for instance in INSTANCES:
                interceptors = [server_interceptor()]
                if impl is not None:
                    interceptors.append(self.impls[impl].server.JitraceServerInterceptor())
                server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
                server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                    "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}),))
                ports[(impl, instance)] = server.add_insecure_port("127.0.0.1:0")
                server.start()
                self.servers.append(server)
        self.channels: list[Any] = []
        # (client's jitrace, server's jitrace, instance) -> the callable
        self.calls: dict[tuple[str | None, str | None, int], Any] = {}
        for client_impl in (None, *self.impls):
            for server_impl in (None, *self.impls):
                for instance in INSTANCES:
                    channel = grpc.insecure_channel(f"127.0.0.1:{ports[(server_impl, instance)]}")
                    self.channels.append(channel)
                    if client_impl is not None:
                        channel = self.impls[client_impl].client.JitraceChannel(channel)
                    channel = intercept_channel(channel, client_interceptor())
                    self.calls[(client_impl, server_impl, instance)] = channel.unary_unary("/bench.Echo/Unary")
        # Comparing two revisions: servers and channels they share, so that no server of one revision's own (and its
        # bias) is in the difference.
        self.dispatch: list[Any] = []
        self.shared: dict[int, Any] = {}
        if base:
            for instance in INSTANCES:
                dispatch = _Dispatch({n: impl.server.JitraceServerInterceptor() for n, impl in self.impls.items()})
                server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                     interceptors=[server_interceptor(), dispatch])
                server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                    "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}),))
                port = server.add_insecure_port("127.0.0.1:0")
                server.start()
                self.servers.append(server)
                self.dispatch.append(dispatch)
                raw = grpc.insecure_channel(f"127.0.0.1:{port}")
                self.channels.append(raw)
                shared = _DispatchChannel({n: impl.client.JitraceChannel(raw) for n, impl in self.impls.items()},
                                          self.dispatch)
                self.shared[instance] = intercept_channel(shared, client_interceptor()).unary_unary(
                    "/bench.Echo/Unary")

    def use(self, config: Config, instance: int = 0) -> Any:
        """Switch to ``config``: the PyJWT hook and the settings; returns the callable to make calls with."""
        impl = self.impls[config.impl]
        for other in self.impls.values():
            if other is not impl or not config.server:
                other.jwt_hook.unpatch()
        if config.server:
            impl.jwt_hook.patch()
        impl.settings.configure(impl.settings_for(config.settings))
        if config.shared:
            for dispatch in self.dispatch:
                dispatch.current = config.impl
            return self.shared[instance]
        return self.calls[(config.impl if config.client else None, config.impl if config.server else None, instance)]

    def block(self, config: Config, calls: int, warm: int, instance: int = 0) -> tuple[list[int], int]:
        call = self.use(config, instance)
        for _ in range(warm):
            call(b"x" * 64, metadata=self.metadata, timeout=10)
        latencies = []
        cpu = time.process_time_ns()
        for _ in range(calls):
            t = time.perf_counter_ns()
            call(b"x" * 64, metadata=self.metadata, timeout=10)
            latencies.append(time.perf_counter_ns() - t)
        return latencies, time.process_time_ns() - cpu

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        for server in self.servers:
            server.stop(None)


def _ci(values: list[float], rng: random.Random, n: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the median of ``values``."""
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def compare(rig: Rig, a: Config, b: Config, rounds: int, calls: int, warm: int) -> dict[str, Any]:
    lat_diff: list[float] = []
    cpu_diff: list[float] = []
    pooled: dict[str, list[int]] = {"a": [], "b": []}
    cpu_total = {"a": 0, "b": 0}
    for r in range(rounds):
        order = (("a", a), ("b", b)) if r % 2 == 0 else (("b", b), ("a", a))
        instance = (r // 2) % len(INSTANCES)  # crossed with the order
        got: dict[str, tuple[float, float]] = {}
        for name, config in order:
            latencies, cpu_ns = rig.block(config, calls, warm, instance)
            pooled[name].extend(latencies)
            cpu_total[name] += cpu_ns
            got[name] = (statistics.median(latencies), cpu_ns / calls)
        lat_diff.append((got["a"][0] - got["b"][0]) / 1000)
        cpu_diff.append((got["a"][1] - got["b"][1]) / 1000)
    rng = random.Random(25)
    med_a, med_b = statistics.median(pooled["a"]), statistics.median(pooled["b"])
    cpu_a, cpu_b = cpu_total["a"] / len(pooled["a"]), cpu_total["b"] / len(pooled["b"])
    return {
        "latency_us": statistics.median(lat_diff), "latency_ci_us": _ci(lat_diff, rng),
        "cpu_us": statistics.median(cpu_diff), "cpu_ci_us": _ci(cpu_diff, rng),
        "median_a_us": med_a / 1000, "median_b_us": med_b / 1000, "latency_ratio": med_a / med_b,
        "cpu_a_us": cpu_a / 1000, "cpu_b_us": cpu_b / 1000, "cpu_ratio": cpu_a / cpu_b,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.switch_instrumentation")
    parser.add_argument("comparisons", nargs="*", default=["both"], choices=sorted(COMPARISONS))
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per block")
    parser.add_argument("--warm", type=int, default=2, help="untimed calls opening each block")
    parser.add_argument("--base", help="a folder holding the package jitrace_base (see the module's docstring)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.base:
        sys.path.insert(0, args.base)
    if any(COMPARISONS[name][1].impl == "base" or COMPARISONS[name][0].impl == "base" for name in args.comparisons) \
            and not args.base:
        parser.error("these comparisons need --base")
    rig = Rig(base=bool(args.base))
    try:
        for config in {c for name in args.comparisons for c in COMPARISONS[name]}:
            for instance in INSTANCES:
                rig.block(config, 100, 50, instance)
        for name in args.comparisons:
            a, b = COMPARISONS[name]
            result = compare(rig, a, b, args.rounds, args.calls, args.warm)
            if args.json:
                print(json.dumps({"comparison": name, **result}), flush=True)
                continue
            lo, hi = result["latency_ci_us"]
            clo, chi = result["cpu_ci_us"]
            print(f"{name:11s} latency {result['latency_us']:+7.1f} us [{lo:+.1f}, {hi:+.1f}] "
                  f"({result['median_a_us']:.0f} vs {result['median_b_us']:.0f}, {result['latency_ratio']:.3f}x)  "
                  f"cpu {result['cpu_us']:+7.1f} us [{clo:+.1f}, {chi:+.1f}] "
                  f"({result['cpu_a_us']:.0f} vs {result['cpu_b_us']:.0f}, {result['cpu_ratio']:.3f}x)", flush=True)
    finally:
        rig.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
