"""Receiver throughput: spans (and log records) per second acknowledged by ``jitrace collect``.

``jitrace collect`` runs as its own process, as users run it. Several concurrent exporters (threads, each with its own
connection) send ready-made 512-span OTLP requests as fast as the receiver acknowledges them; a span counts once its
batch is acknowledged, which the receiver does only after the Parquet file holding it is fsynced and renamed.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc

from tests import otlp_requests
from tests.otlp_requests import kv as _kv
from tests.processes import start_collect

TITLE = "Receiver: spans/s acknowledged by jitrace collect"
TARGET = 100_000
BATCH = 512
T0 = 1_700_000_000_000_000_000
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"



def _traces(n: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", "orders"), _kv("host.name", "bench")])
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.grpc"
    attrs = [_kv("rpc.system", "grpc"), _kv("rpc.service", "jitlab.Orders"), _kv("rpc.method", "Get"),
             _kv("rpc.grpc.status_code", 7), _kv("jit.token.ttl_s", -1.5), _kv("jit.token.verdict", "expired"),
             _kv("jit.token.present", True), _kv("jit.policy.granted", ["orders.read", "orders.write"])]
    for i in range(n):
        ss.spans.append(Span(trace_id=os.urandom(16), span_id=os.urandom(8), parent_span_id=os.urandom(8),
                             name="jitlab.Orders/Get", kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=T0 + i,
                             end_time_unix_nano=T0 + i + 500, attributes=attrs))
    return req.SerializeToString()


def _logs(n: int) -> bytes:
    return otlp_requests.logs(n).SerializeToString()


def _start(out: Path, workers: int) -> tuple[subprocess.Popen, int, int]:
    proc, grpc_port, http_port, _ = start_collect(out, "--workers", str(workers), stdout=None)
    return proc, grpc_port, http_port


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) of a process and its children that were waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _receiver_cpu(proc: subprocess.Popen) -> float:
    """CPU seconds used so far by ``jitrace collect`` and its worker processes (a watch process included)."""
    return sum(cpu_split(proc))


def cpu_split(proc: subprocess.Popen) -> tuple[float, float]:
    """CPU seconds used so far by ``jitrace collect``'s receivers (it and its workers) and by its watch process."""
    receivers, watch = _cpu_seconds(proc.pid), 0.0
    for child in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = child.read_text().rpartition(")")[2].split()
            if int(fields[1]) == proc.pid:  # ppid
                seconds = _cpu_seconds(int(child.parent.name))
                if b"--watch-process" in (child.parent / "cmdline").read_bytes():
                    watch += seconds
                else:
                    receivers += seconds
        except (OSError, ValueError, IndexError):
            continue
    return receivers, watch


def _drive(send, payload: bytes, records: int, exporters: int, seconds: float) -> tuple[int, float]:
    """``exporters`` threads call ``send(payload)`` until time is up; returns (records acknowledged, seconds)."""
    acked = [0] * exporters
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        call = send()
        while time.perf_counter() < deadline:
            call(payload)
            acked[i] += records

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(exporters)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(acked), time.perf_counter() - started


def _grpc_sender(port: int, method: str):
    def make():
        # its own connection, as separate exporter processes have (channels in one process share one by default)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        stub = channel.unary_unary(method)
        return lambda payload: stub(payload, timeout=30)
    return make


def _http_sender(port: int, path: str):
    def make():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def send(payload: bytes) -> None:
            conn.request("POST", path, body=payload, headers={"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
        return send
    return make


def run(quick: bool) -> str:
    seconds = 2.0 if quick else 8.0
    spans, logs = _traces(BATCH), _logs(BATCH)
    rows = ["| protocol | signal | exporters | receiver processes | records acknowledged | seconds | records/s | "
            "records per receiver CPU-second | Parquet bytes/record |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for proto, signal_name, exporters, workers in (("gRPC", "spans", 1, 1), ("gRPC", "spans", 4, 1),
                                                   ("gRPC", "spans", 4, 2), ("HTTP", "spans", 4, 1),
                                                   ("HTTP", "spans", 4, 2), ("gRPC", "logs", 4, 1)):
        with tempfile.TemporaryDirectory(prefix="jitrace-bench-collect-") as tmp:
            out = Path(tmp) / "out"
            proc, grpc_port, http_port = _start(out, workers)
            try:
                payload = spans if signal_name == "spans" else logs
                if proto == "gRPC":
                    send = _grpc_sender(grpc_port, TRACES if signal_name == "spans" else LOGS)
                else:
                    send = _http_sender(http_port, "/v1/traces")
                _drive(send, payload, BATCH, 1, 0.3)  # warm-up: connections, first writes
                warm = sum(f.stat().st_size for f in out.rglob("*.parquet"))
                cpu_before = _receiver_cpu(proc)
                n, secs = _drive(send, payload, BATCH, exporters, seconds)
                cpu = _receiver_cpu(proc) - cpu_before
                size = sum(f.stat().st_size for f in out.rglob("*.parquet")) - warm
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
            rate = n / secs
            mark = f" ({'meets' if rate >= TARGET else 'below'} {TARGET:,})" if signal_name == "spans" else ""
            rows.append(f"| {proto} | {signal_name} | {exporters} | {workers} | {n:,} | {secs:.1f} | "
                        f"{rate:,.0f}{mark} | {n / max(cpu, 1e-9):,.0f} | {size / max(n, 1):,.0f} |")
    return (
        f"{BATCH}-record requests (gRPC server spans with 8 attributes; WARNING logs with trace context), sent by "
        "threads in the bench process to a separate `jitrace collect` process on the same "
        f"{os.cpu_count()}-core machine (client and receiver share the cores). Target: {TARGET:,} spans/s. "
        "Each exporter resends one request, so its ids repeat and Parquet bytes/record understate real data "
        "(see the loaders' table for distinct spans). Records per receiver CPU-second divide by the CPU time the "
        "receiver processes used, a figure less at the mercy of the machine's load.\n\n"
        + "\n".join(rows)
    )
