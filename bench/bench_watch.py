"""``jitrace collect --watch``: attribution lag under load, and what the watch costs the receiver.

Lag: the time from a request's acknowledgement (its Export call returning to the exporter) to the moment the bench
reads the printed line of a denial it carried, on ``jitrace collect``'s stdout: what an on-call engineer waits.
The exporters send 512-span requests of client/server pairs (two hosts, a few denials each, every request with
trace ids of its own) at a fixed rate. Throughput: the same requests as fast as the receiver acknowledges them,
with and without ``--watch``, side by side.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.bench_collect import TRACES, _drive, _grpc_sender, _kv, _receiver_cpu, cpu_split
from tests.processes import start_collect

TITLE = "Live: attribution lag and receiver throughput with jitrace collect --watch"
RATE = 100_000  # spans/s offered for the lag
CALLS = 256  # per request: a client and a server span each
DENIED_EVERY = 128  # one call in this many is denied
T0 = 1_700_000_000_000_000_000
MARK = b"\x8e\x11\xd4\x02\x7f\xa3\x5c\xe9"  # the template's trace-id prefix, replaced per request


def template() -> bytes:
    """One request: CALLS client spans (host gateway) and their server spans (host orders)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    req = ExportTraceServiceRequest()
    sides = {}
    for side, service, host in (("client", "gateway", "gateway-host"), ("server", "orders", "orders-host")):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend([_kv("service.name", service), _kv("host.name", host)])
        sides[side] = rs.scope_spans.add()
        sides[side].scope.name = "opentelemetry.instrumentation.grpc"
    for i in range(CALLS):
        denied = i % DENIED_EVERY == 0
        trace_id = MARK + i.to_bytes(8, "big")
        client_id, server_id = os.urandom(8), os.urandom(8)
        start = T0 + i * 1_000_000
        token = [_kv("jit.token.present", True), _kv("jit.token.id", f"tok-{i}"), _kv("jit.token.sub", "alice"),
                 _kv("jit.token.exp", 1_700_000_000 + (-2 if denied else 300))]
        rpc = [_kv("rpc.system", "grpc"), _kv("rpc.service", "shop.Orders"), _kv("rpc.method", "Get"),
               _kv("rpc.grpc.status_code", 7 if denied else 0)]
        sides["client"].spans.append(Span(
            trace_id=trace_id, span_id=client_id, name="shop.Orders/Get", kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=start, end_time_unix_nano=start + 900_000,
            attributes=rpc + token + [_kv("jit.token.ttl_s", -2.0 if denied else 300.0),
                                      _kv("jit.clock.sent_ns", start)]))
        sides["server"].spans.append(Span(
            trace_id=trace_id, span_id=server_id, parent_span_id=client_id, name="shop.Orders/Get",
            kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=start + 200_000, end_time_unix_nano=start + 700_000,
            attributes=rpc + token + [_kv("jit.token.ttl_s", -2.0 if denied else 300.0),
                                      _kv("jit.token.verdict", "expired" if denied else "valid"),
                                      _kv("jit.policy.decision", "allow")]))
    return req.SerializeToString()


def _start(out: Path, *options: str) -> tuple[subprocess.Popen, int]:
    proc, grpc_port, _, _ = start_collect(out, "--http", "off", *options, stdout=subprocess.PIPE, text=False)
    return proc, grpc_port


def _stop(proc: subprocess.Popen) -> str:
    """Stop the receiver; its stderr. Its stdout is a reader thread's to the end (the watch's last lines come as it
    stops): communicate() would take some of them."""
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    proc.wait(timeout=300)
    return err.decode() if isinstance(err, bytes) else (err or "")


class _Lines:
    """Reads the watch's stdout; each denial line's read time, by its request's trace-id prefix."""

    def __init__(self, stream) -> None:
        self.seen: list[tuple[str, float]] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for raw in stream:
            now = time.time()
            m = re.search(rb" denial +trace=([0-9a-f]{16})", raw)
            if m:
                self.seen.append((m.group(1).decode(), now))


def _paced(port: int, payload: bytes, exporters: int, seconds: float, rate: float) -> tuple[dict[str, float], int]:
    """Send ``rate`` spans/s for ``seconds`` from ``exporters`` threads, each request with fresh trace ids;
    returns {trace-id prefix: acknowledged at} and the spans acknowledged."""
    acked: dict[str, float] = {}
    per_thread = rate / (2 * CALLS) / exporters  # requests per second per exporter
    counts = [0] * exporters

    def worker(i: int) -> None:
        call = _grpc_sender(port, TRACES)()
        began = time.perf_counter()
        n = 0
        while time.perf_counter() - began < seconds:
            due = began + n / per_thread
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            prefix = os.urandom(8)
            call(payload.replace(MARK, prefix))
            acked[prefix.hex()] = time.time()
            n += 1
            counts[i] += 2 * CALLS

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(exporters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acked, sum(counts)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _lag(workers: int, seconds: float, rate: float, payload: bytes) -> dict:
    with tempfile.TemporaryDirectory(prefix="jitrace-bench-watch-") as tmp:
        proc, port = _start(Path(tmp) / "out", "--workers", str(workers), "--watch")
        try:
            lines = _Lines(proc.stdout)
            cpu_before = cpu_split(proc)  # after the start: imports and start-up not counted
            mine_before = time.process_time()  # this process: the exporters (and the line reader)
            started = time.perf_counter()
            acked, spans = _paced(port, payload, 4, seconds, rate)
            sent_s = time.perf_counter() - started
            time.sleep(3)  # the last requests' lines
            cpu = [after - before for after, before in zip(cpu_split(proc), cpu_before, strict=True)]
            cpu.append(time.process_time() - mine_before)
            wall = time.perf_counter() - started
        finally:
            err = _stop(proc)
        lines.thread.join(60)
    first = min(acked.values(), default=0.0)
    timed = [(at - acked[prefix], at) for prefix, at in lines.seen if prefix in acked]
    expected = len(acked) * (CALLS // DENIED_EVERY)
    # a denial never printed counts as an infinite lag: the percentiles are over every denial sent
    lags = [lag for lag, _ in timed] + [float("inf")] * max(0, expected - len(timed))
    late = [lag for lag, at in timed if at - first > seconds / 2]  # the state near its bound
    return {"spans": spans, "rate": spans / sent_s, "lines": len(timed), "expected": expected,
            "p50": _percentile(lags, 0.5), "p99": _percentile(lags, 0.99), "max": max(lags, default=float("nan")),
            "late_p99": _percentile(late, 0.99), "summary": next((x for x in err.splitlines() if "--watch:" in x), ""),
            "receivers_cpu": cpu[0], "watch_cpu": cpu[1], "exporters_cpu": cpu[2], "wall": wall}


def _throughput(watch: bool, workers: int, seconds: float, payload: bytes) -> tuple[float, float]:
    """Spans/s acknowledged, unpaced (4 exporters, fresh trace ids per request), and per receiver CPU-second."""
    with tempfile.TemporaryDirectory(prefix="jitrace-bench-watch-") as tmp:
        proc, port = _start(Path(tmp) / "out", "--workers", str(workers), *(["--watch"] if watch else []))
        try:
            drain = threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True)
            drain.start()

            def sender():
                call = _grpc_sender(port, TRACES)()
                return lambda p: call(p.replace(MARK, os.urandom(8)))
            _drive(sender, payload, 2 * CALLS, 1, 0.3)
            cpu = _receiver_cpu(proc)
            n, secs = _drive(sender, payload, 2 * CALLS, 4, seconds)
            cpu = _receiver_cpu(proc) - cpu
        finally:
            _stop(proc)
    return n / secs, n / max(cpu, 1e-9)


def run(quick: bool) -> str:
    load_before = os.getloadavg()[0]
    payload = template()
    seconds = 3.0 if quick else 20.0
    rates = (RATE / 10,) if quick else (RATE, RATE / 2, RATE / 4)  # the target, and rates below it
    lags = [(rate, _lag(2, seconds, rate, payload)) for rate in rates]
    tp_seconds = 2.0 if quick else 6.0
    rounds = 1 if quick else 5  # interleaved (the machine's load moves from one minute to the next): the median
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(rounds):
        for watch in (False, True):
            runs[watch].append(_throughput(watch, 2, tp_seconds, payload))
    median = {watch: sorted(r)[len(r) // 2] for watch, r in runs.items()}
    base = median[False][0]
    table = ["| receiver | spans/s acknowledged (median) | vs without --watch | each round | "
             "spans per receiver CPU-second (median round) |", "|---|---:|---:|---|---:|"]
    for watch in (False, True):
        rate_s, per_cpu = median[watch]
        table.append(f"| `collect --workers 2{' --watch' if watch else ''}` | {rate_s:,.0f} | {rate_s / base:.0%} | "
                     f"{', '.join(f'{r:,.0f}' for r, _ in runs[watch])} | {per_cpu:,.0f} |")
    lag_rows = ["| offered spans/s | achieved spans/s | denial lines read | denials sent | lag p50 | lag p99 | "
                "p99, second half | max | receivers' CPU s | watch's CPU s | watch's CPU s per 100k spans | "
                "exporters' CPU s | cores busy |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rate, lag in lags:
        verdict = "meets" if lag["p99"] <= 2.0 else "misses"
        lag_rows.append(f"| {rate:,.0f} | {lag['rate']:,.0f} | {lag['lines']:,} | {lag['expected']:,} | "
                        f"{lag['p50']:.2f} s | {lag['p99']:.2f} s ({verdict} 2 s) | {lag['late_p99']:.2f} s | "
                        f"{lag['max']:.2f} s | {lag['receivers_cpu']:.1f} | {lag['watch_cpu']:.1f} | "
                        f"{lag['watch_cpu'] / max(lag['spans'], 1) * 1e5:.2f} | {lag['exporters_cpu']:.1f} | "
                        f"{(lag['receivers_cpu'] + lag['watch_cpu'] + lag['exporters_cpu']) / lag['wall']:.2f} |")
    summaries = "\n".join(f"- at {rate:,.0f} spans/s offered: {lag['summary']}" for rate, lag in lags)
    return (
        f"Requests of {2 * CALLS} spans ({CALLS} client/server pairs on two hosts, one call in {DENIED_EVERY} "
        f"denied), each with trace ids of its own, sent over OTLP/gRPC by 4 exporter threads in the bench process to "
        f"`jitrace collect --workers 2 --watch` on the same {os.cpu_count()}-core machine (exporters, receivers and "
        "the watch share the cores). Lag: from a request's acknowledgement to the bench reading its denial's line "
        f"on the receiver's stdout, {seconds:.0f} s at each offered rate (the achieved rate is what the receivers "
        "acknowledged; the lines are read to the end, those the watch prints as the receiver stops included, and a "
        "denial never printed counts as an infinite lag: the percentiles are over every denial sent). CPU: user and "
        "system time from the first request to the end of the run (start-up not counted), of the receiver "
        "processes, of the watch process and of the bench process (its exporters); cores busy: the three over the "
        "time from the first request to the last line awaited. CPU is less at the mercy of the machine's load than "
        "the lag. The machine's "
        f"load average was {load_before:.1f} when the section began and {os.getloadavg()[0]:.1f} when it ended: "
        "every figure here depends on what else runs.\n\n"
        + "\n".join(lag_rows) + "\n\n" + summaries + "\n\n"
        f"Throughput, the same requests as fast as acknowledged ({tp_seconds:.0f} s a run, {rounds} rounds of a run "
        "without and a run with --watch, one after the other):\n\n"
        + "\n".join(table)
    )
