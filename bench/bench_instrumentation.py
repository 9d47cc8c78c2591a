"""Added latency and CPU per unary call: plain grpc vs OpenTelemetry's gRPC instrumentation alone vs OpenTelemetry +
jitrace (and jitrace's client and server sides alone, and a clock stamp on every call, to show where the cost is).

Worker processes per variant (instrumentation is process-global), each with a loopback server and a client in it;
the server verifies an RS256 bearer token with ``jwt.decode`` (a JIT-protected service, so jitrace's PyJWT hook is
measured too). Rounds are interleaved across the variants, in a rotating order, so that the machine's load drifts
over all of them alike. Spans go through the SDK's BatchSpanProcessor to an exporter that drops them (the export is
not the instrumentation's cost). Target: OpenTelemetry + jitrace at most 1.05x OpenTelemetry alone, in median
latency and in CPU per call (the worker process's CPU time over its calls), and no process above 1.10x.

Each variant runs in ``PROCESSES`` worker processes, taking rounds in turn (with one process per variant, two runs of
the same code once gave +11.3% and +6.4%). Where the variance comes from, measured on a loaded 2-core machine (its
figures: the commit that wrote this paragraph): from round to round, a block's median moving with the machine's
load and with where the scheduler puts the call's threads; the processes of one variant differed by no more than
that noise predicts. So the rounds are short (``ROUNDS`` of ``PER_ROUND`` calls: as many timed calls as the longer
rounds before, in more rounds, each round's otel and otel+jitrace blocks closer in time), and each worker process is
pinned to one CPU, process i of every variant on the same CPU (no variant gets another placement): a call's client,
server and gRPC threads then share one CPU's caches and wait on no wake-up across CPUs. Pinned, a round's ratio moved
a half to two thirds as much, and in runs whose processes were half pinned, half not, the pinned halves' ratios were
neither consistently above nor below the others' (within their noise): the same thing measured, with less noise.
What still differs from run to run is more than a run's own rounds account for: the ratio itself moves with what
else the machine runs (on a loaded machine, a run whose calls are slower all round gave a higher ratio in every one
of its processes and in its median round). One run decides nothing there; a quiet machine, or several runs, do.
Client and server are in one process for every variant.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

TITLE = "Instrumentation: added latency per unary call"
VARIANTS = ("plain", "otel", "otel+jitrace", "otel+jitrace client", "otel+jitrace server",
            "otel+jitrace, every call stamped")
TARGET = 1.05  # otel+jitrace / otel, median latency and CPU per call
PROCESS_LIMIT = 1.10  # any one otel+jitrace process against the pooled otel figures
PROCESSES = 3  # per variant
ROUNDS, PER_ROUND = 140, 75  # per variant: 10,500 timed calls
PIN = hasattr(os, "sched_setaffinity")  # each worker process on one CPU (see the module's docstring)

WORKER = textwrap.dedent('''
    import json, sys, time, os
    from concurrent import futures
    variant = sys.argv[1]
    if variant != "plain":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Drop(SpanExporter):
            def export(self, spans):
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
        from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, GrpcInstrumentorServer
        GrpcInstrumentorClient().instrument()
        GrpcInstrumentorServer().instrument()
    if variant.startswith("otel+jitrace"):
        import jitrace.instrumentation as ji
        ji.instrument()
        from jitrace.instrumentation import _hooks
        if variant == "otel+jitrace client":  # the server side off: its hooks, and the PyJWT hook
            _hooks._active["server"] = False
            from jitrace.instrumentation import _jwt_hook
            _jwt_hook.unpatch()
        elif variant == "otel+jitrace server":
            _hooks._active["client"] = False
        elif variant == "otel+jitrace, every call stamped":  # JITRACE_CLOCK_STAMP_INTERVAL_S=0
            from jitrace.instrumentation import _settings
            _settings.configure(_settings.Settings(clock_stamp_interval_s=0.0))
    import grpc, jwt
    from bench.jwt_token import bench_token
    token, public = bench_token(3600)

    def unary(request, context):
        auth = dict(context.invocation_metadata()).get("authorization", "")
        jwt.decode(auth.removeprefix("Bearer "), public, algorithms=["RS256"], audience="bench", issuer="jit-issuer")
        return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/bench.Echo/Unary")
    md = (("authorization", "Bearer " + token),)
    print("ready", flush=True)
    for line in sys.stdin:
        n, warm = map(int, line.split())
        if n == 0:
            break
        for _ in range(warm):  # untimed: the process has been idle while the others took their rounds
            call(b"x" * 64, metadata=md, timeout=10)
        out = []
        cpu = time.process_time_ns()  # the whole process: client, server, OTel's and jitrace's threads
        for _ in range(n):
            t = time.perf_counter_ns()
            call(b"x" * 64, metadata=md, timeout=10)
            out.append(time.perf_counter_ns() - t)
        print(json.dumps({"latency_ns": out, "cpu_ns": time.process_time_ns() - cpu}), flush=True)
    channel.close()
    server.stop(None)
''')


def _start(variant: str, cpus: set[int] | None = None) -> subprocess.Popen:
    """A worker process for ``variant``, ready; pinned to ``cpus`` when given (every thread it has: the threads it
    starts later inherit it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JITRACE_"))}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, variant], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"bench worker {variant} did not start")
    if cpus is not None:
        os.sched_setaffinity(proc.pid, cpus)  # the process's threads started so far: gRPC's and OTel's
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            os.sched_setaffinity(int(task), cpus)
    return proc


ROUND_WARMUP = 15  # untimed calls that start each round, so a process is not measured cold


def _round(proc: subprocess.Popen, n: int, warm: int = ROUND_WARMUP) -> tuple[list[int], int]:
    """One round of ``n`` calls after ``warm`` untimed ones: their latencies and the worker's CPU time over the
    timed calls (ns)."""
    proc.stdin.write(f"{n} {warm}\n")
    proc.stdin.flush()
    reply = json.loads(proc.stdout.readline())
    return reply["latency_ns"], reply["cpu_ns"]


def _p(values: list[int], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1]


Rounds = dict[str, list[tuple[float, float]]]  # variant -> per round: (median latency, CPU per call), ns


def schedule(rounds: int, processes: int) -> list[tuple[int, tuple[str, ...]]]:
    """Each round's worker process (the same index in every variant) and its order of variants. Who goes first
    rotates once per cycle of the processes, so every process meets every order: with the order tied to the round
    alone, process r % processes met the same two orders every time (6 variants, 3 processes: in the third,
    otel+jitrace always ran first or fourth), which tied a process's own ratio to where its blocks sat in a round."""
    out = []
    for r in range(rounds):
        k = (r // processes) % len(VARIANTS)
        out.append((r % processes, VARIANTS[k:] + VARIANTS[:k]))
    return out


def measure(rounds: int, per_round: int, warmup: int, processes: int = PROCESSES, round_warmup: int = ROUND_WARMUP,
            pin: bool = PIN) -> tuple[dict[str, list[list[int]]], dict[str, list[int]], Rounds]:
    """Latencies per variant and per process (round r goes to process r % processes of every variant), CPU time
    per variant and per process over its measured calls, and each round's median latency and CPU per call.
    ``pin``: worker process i of every variant on the i-th of this process's CPUs (modulo their number)."""
    cpus = sorted(os.sched_getaffinity(0)) if pin else []
    procs = {v: [_start(v, {cpus[i % len(cpus)]} if pin else None) for i in range(processes)] for v in VARIANTS}
    samples: dict[str, list[list[int]]] = {v: [[] for _ in range(processes)] for v in VARIANTS}
    cpu: dict[str, list[int]] = {v: [0] * processes for v in VARIANTS}
    by_round: Rounds = {v: [] for v in VARIANTS}
    try:
        for v in VARIANTS:
            for proc in procs[v]:
                _round(proc, warmup, 0)
        for p, order in schedule(rounds, processes):
            for v in order:
                latencies, cpu_ns = _round(procs[v][p], per_round, round_warmup)
                samples[v][p].extend(latencies)
                cpu[v][p] += cpu_ns
                by_round[v].append((statistics.median(latencies), cpu_ns / len(latencies)))
    finally:
        for proc in (p for group in procs.values() for p in group):
            try:
                proc.stdin.write("0 0\n")
                proc.stdin.flush()
                proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - a stuck worker is killed, not waited for
                proc.kill()
    return samples, cpu, by_round


def _verdict(ratio: float, limit: float) -> str:
    return f"**{ratio:.3f}x** ({'within' if ratio <= limit else 'OVER'} {limit:.2f}x)"


def run(quick: bool) -> str:
    rounds, per_round, warmup = (3, 100, 50) if quick else (ROUNDS, PER_ROUND, 300)
    by_process, cpu_by_process, by_round = measure(rounds, per_round, warmup)
    samples = {v: [x for group in groups for x in group] for v, groups in by_process.items()}
    med = {v: statistics.median(s) for v, s in samples.items()}
    cpu_per_call = {v: sum(cpu_by_process[v]) / len(samples[v]) for v in VARIANTS}
    ours, otel = "otel+jitrace", "otel"
    lat_ratio, cpu_ratio = med[ours] / med[otel], cpu_per_call[ours] / cpu_per_call[otel]
    process_ratios = [(statistics.median(group) / med[otel], cpu_ns / len(group) / cpu_per_call[otel])
                      for group, cpu_ns in zip(by_process[ours], cpu_by_process[ours], strict=True) if group]
    worst = max(max(pair) for pair in process_ratios)
    # the same ratios taken round by round (each round's blocks run within a second of each other): a change of the
    # machine's load during the run falls on both sides of each ratio
    paired = [(ours_lat / otel_lat, ours_cpu / otel_cpu)
              for (ours_lat, ours_cpu), (otel_lat, otel_cpu) in zip(by_round[ours], by_round[otel], strict=True)]
    paired_lat = statistics.median(p[0] for p in paired)
    paired_cpu = statistics.median(p[1] for p in paired)
    lines = [
        f"{rounds} interleaved rounds x {per_round} sync unary calls per variant, taken in turn by {PROCESSES} worker "
        f"processes per variant (after {warmup} warm-up calls each, and {ROUND_WARMUP} untimed calls at the start of "
        "each round); loopback, client and server in each worker process"
        + (", each worker process pinned to one CPU (process i of every variant on the same one)" if PIN else "")
        + "; the handler verifies an RS256 JWT. The table pools the processes' calls: median and p90 over all of a "
        "variant's timed calls. CPU per call: the worker processes' CPU time (client and server, every thread) over "
        "their timed calls, divided by their number; less at the mercy of the machine's load than latency. The "
        "verdict is on these pooled figures; the ratios round by round (the median of each round's otel+jitrace "
        "block over its otel block) measure the same thing with the load's drift between rounds taken out.",
        "",
        "| variant | median (µs) | p90 (µs) | median / plain | median / otel | CPU per call (µs) | CPU / otel |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in VARIANTS:
        lines.append(f"| {v} | {med[v] / 1000:.1f} | {_p(samples[v], 0.9) / 1000:.1f} | "
                     f"{med[v] / med['plain']:.2f} | {med[v] / med[otel]:.3f} | {cpu_per_call[v] / 1000:.1f} | "
                     f"{cpu_per_call[v] / cpu_per_call[otel]:.3f} |")
    lines += [
        "",
        f"OpenTelemetry + jitrace against OpenTelemetry alone: median latency {_verdict(lat_ratio, TARGET)} "
        f"({(med[ours] - med[otel]) / 1000:+.1f} µs a call), CPU per call {_verdict(cpu_ratio, TARGET)} "
        f"({(cpu_per_call[ours] - cpu_per_call[otel]) / 1000:+.1f} µs a call). Each otel+jitrace process against "
        "the pooled OpenTelemetry figures (latency, CPU): "
        + ", ".join(f"{lat:.3f}x / {cpu:.3f}x" for lat, cpu in process_ratios)
        + f"; the highest {_verdict(worst, PROCESS_LIMIT)}. The ratios round by round (each round's otel and "
        "otel+jitrace blocks run within a second of each other, so a change of load falls on both), median over the "
        f"{len(paired)} rounds: latency {paired_lat:.3f}x, CPU {paired_cpu:.3f}x (rounds from "
        f"{min(p[0] for p in paired):.3f}x to {max(p[0] for p in paired):.3f}x, and "
        f"{min(p[1] for p in paired):.3f}x to {max(p[1] for p in paired):.3f}x).",
        "",
        f"Split: the client side alone {med['otel+jitrace client'] / med[otel]:.3f}x, the server side alone "
        f"(interceptor and PyJWT hook) {med['otel+jitrace server'] / med[otel]:.3f}x; both sides with a clock stamp "
        f"on every call (JITRACE_CLOCK_STAMP_INTERVAL_S=0, the `jit-sent-ns` and `jit-clock` entries each way) "
        f"{med['otel+jitrace, every call stamped'] / med[otel]:.3f}x, against the default interval (1 s per "
        "target) in the otel+jitrace row.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
