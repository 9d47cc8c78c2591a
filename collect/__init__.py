"""``jitrace collect``: an OTLP receiver (gRPC and HTTP) that writes spans and logs to Parquet, partitioned by hour.

Output: ``OUT/spans/hour=YYYY-MM-DDTHH/<uuid>.parquet`` and ``OUT/logs/hour=.../<uuid>.parquet`` in the schemas of
``jitrace.analyzer.schema``, filed by the hour (UTC) they arrived in. A batch is acknowledged only after its file is
durably written (see ``_writer``), so a receiver killed at any moment loses no acknowledged batch; SIGTERM/SIGINT stop
it after in-flight batches are written. It never traces its own traffic (see ``_grpc``). An hour folder idle for
``--compact-after`` seconds, and every folder at a clean stop, is compacted into one ``compacted-<uuid>.parquet``
holding the span facts (``_compact``).

Converting OTLP to rows is Python work under one GIL; ``--workers N`` runs N receiver processes on the same ports
(SO_REUSEPORT: the kernel spreads connections over them), each writing its own files.

Peers may be hostile: connections, calls, bytes in flight and read time are bounded (``_http``, ``_grpc``), and
``--tls-cert``/``--tls-key`` and ``--auth-token-file`` decide who may send (``_access``).

OTLP metrics requests are stored as they came (``OUT/metrics/``, OTLP JSON), for a second receiver of a first one's
``--metrics-otlp``. ``--watch`` starts a watch process told of every durable file (``_announce``, ``watch``): the
denials attributed live, and metrics to alert on (``metrics``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from jitrace.analyzer import rule_options
from jitrace.analyzer.errors import UserError
from jitrace.collect._access import Access
from jitrace.collect.stop_signals import StopSignals

__all__ = ["Receiver", "configure", "run"]

DEFAULT_GRPC = "127.0.0.1:4317"
DEFAULT_HTTP = "127.0.0.1:4318"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # per request, after decompression
DEFAULT_MAX_CONCURRENT = 64  # HTTP connections open, gRPC calls in progress
DEFAULT_READ_TIMEOUT = 10.0  # seconds for an HTTP request to arrive whole (the Collector's confighttp's order)
DEFAULT_WATCH_WINDOW_S = 900.0  # --watch: seconds of arrivals the state keeps (watch.py)
DEFAULT_WATCH_MAX_SPANS = 1_000_000


class Receiver:
    """OTLP/gRPC and OTLP/HTTP receiver into ``out_dir``; ``start()`` binds (port 0 allowed), ``stop()`` drains."""

    def __init__(self, out_dir: str | os.PathLike, grpc_addr: str | None = DEFAULT_GRPC,
                 http_addr: str | None = DEFAULT_HTTP, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 reuse_port: bool = False, clean: bool = True, in_flight_bytes: int | None = None,
                 max_concurrent: int = DEFAULT_MAX_CONCURRENT, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 access: Access | None = None) -> None:
        from jitrace.collect._budget import DEFAULT_IN_FLIGHT_BYTES, Budget
        from jitrace.collect._http import Counters
        from jitrace.collect._writer import Writer

        self.out = Path(out_dir)
        self.grpc_addr, self.http_addr, self.max_bytes = grpc_addr, http_addr, max_bytes
        self.reuse_port, self.clean = reuse_port, clean
        self.max_concurrent, self.read_timeout, self.access = max_concurrent, read_timeout, access or Access()
        self.writer = Writer(self.out)
        self.budget = Budget(in_flight_bytes or max(DEFAULT_IN_FLIGHT_BYTES, 4 * max_bytes))
        # refused for capacity: budget.refused
        self.stats = {"spans": 0, "logs": 0, "metric_points": 0, "rejected": 0, "requests": 0}
        self.http_counters = Counters()  # HTTP connections lost, timed out, over the cap, unauthenticated
        self.grpc_unauthenticated = 0
        self._stats_lock = threading.Lock()
        self._grpc = self._http = self._http_thread = None

    def start(self) -> tuple[int | None, int | None]:
        from jitrace.collect import _grpc, _http

        self.out.mkdir(parents=True, exist_ok=True)
        if self.clean:  # not in a --workers child: its siblings' in-progress files are not leftovers
            from jitrace.collect import compact

            self.writer.remove_partial_files()
            compact.finish(self.out)
        grpc_port = http_port = None
        try:
            if self.grpc_addr:
                self._grpc, grpc_port = _grpc.create_server(
                    self.grpc_addr, self.ingest, self.max_bytes, reuse_port=self.reuse_port,
                    max_concurrent=self.max_concurrent, access=self.access, refused=self._unauthenticated)
            if self.http_addr:
                limits = _http.Limits(self.max_bytes, self.budget, self.read_timeout, self.max_concurrent,
                                      self.access)
                self._http, self._http_thread, http_port = _http.create_server(
                    self.http_addr, self._ingest, limits, self.http_counters, reuse_port=self.reuse_port)
        except (OSError, RuntimeError, ValueError) as exc:
            self.stop()
            raise UserError(f"cannot listen on {self.grpc_addr} / {self.http_addr}: {exc}") from None
        return grpc_port, http_port

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let in-flight batches finish their durable write, close."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait(grace_s + 1)
            self._grpc = None

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _unauthenticated(self) -> None:
        with self._stats_lock:
            self.grpc_unauthenticated += 1

    def refusals(self) -> str:
        """What was refused or lost for a peer's doing, for the stop line ("" when nothing was)."""
        c = self.http_counters
        parts = {"disconnected mid-request": c.disconnects, "timed out": c.timeouts,
                 "over the connection cap": c.full, "without the token": c.unauthenticated + self.grpc_unauthenticated}
        return ", ".join(f"{n} {what}" for what, n in parts.items() if n)

    def ingest(self, kind: str, body: bytes, encoding: str) -> tuple[int, str]:
        """Convert one export request and write it durably; returns (records rejected, why). ValueError: not OTLP;
        ``_budget.Busy``: at capacity, nothing was stored (the exporter retries)."""
        size = len(body)
        self.budget.acquire(size)
        try:
            return self._ingest(kind, body, encoding)
        finally:
            self.budget.release(size)

    def _ingest(self, kind: str, body: bytes, encoding: str) -> tuple[int, str]:
        from jitrace.analyzer.otlp import from_json, from_protobuf
        from jitrace.analyzer.rows import Rows

        rows = Rows()
        if kind == "metrics":
            return self._ingest_metrics(body, encoding)
        if kind == "traces" and encoding == "protobuf":
            fast = from_protobuf.spans_table(body, None)  # the C decoder; None: from_protobuf reads it
            if fast is not None:
                spans, may_hold = fast
                self.writer.write("spans", spans, may_hold)
                self._count(spans.num_rows, 0, 0)
                return 0, ""
        if encoding == "json":
            obj = json.loads(body)
            if not isinstance(obj, dict):
                raise ValueError("the body is not a JSON object")
            from_json.add_request(obj, rows, "request")
            rows.spans = [r[:-1] + (None,) for r in rows.spans]  # the loader names the file as the source
            rows.logs = [r[:-1] + (None,) for r in rows.logs]
        elif kind == "traces":
            from_protobuf.add_traces(from_protobuf.parse_traces(body), rows, None)
        else:
            from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

            from_protobuf.add_logs(ExportLogsServiceRequest.FromString(body), rows, None)
        if kind == "traces":
            self.writer.write("spans", rows.spans)
        else:
            self.writer.write("logs", rows.logs)
        self._count(len(rows.spans), len(rows.logs), rows.bad)
        return rows.bad, "; ".join(rows.problems[:3])

    def _count(self, spans: int, logs: int, rejected: int) -> None:
        with self._stats_lock:
            self.stats["spans"] += spans
            self.stats["logs"] += logs
            self.stats["rejected"] += rejected
            self.stats["requests"] += 1

    def _ingest_metrics(self, body: bytes, encoding: str) -> tuple[int, str]:
        """An OTLP metrics request is stored as it came, as one line of OTLP JSON (the Collector's file exporter's
        format; ``jitrace analyze`` skips and counts such requests), and its data points are counted."""
        from google.protobuf import json_format
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

        from jitrace.analyzer import redact

        if encoding == "json":
            request = json_format.Parse(body, ExportMetricsServiceRequest(), ignore_unknown_fields=True)
        else:
            request = ExportMetricsServiceRequest.FromString(body)
        points = sum(len(getattr(m, m.WhichOneof("data")).data_points) if m.WhichOneof("data") else 0
                     for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
        if not request.resource_metrics:
            return 0, ""
        text = json_format.MessageToJson(request, indent=None, use_integers_for_enums=True)
        self.writer.write_file("metrics", (redact.redact(text) + "\n").encode(), ".json")
        with self._stats_lock:
            self.stats["metric_points"] += points
            self.stats["requests"] += 1
        return 0, ""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for spans/ and logs/ (Parquet, partitioned by hour)")
    parser.add_argument("--grpc", default=DEFAULT_GRPC, metavar="HOST:PORT",
                        help=f"OTLP/gRPC address (default {DEFAULT_GRPC}; 'off' to disable; port 0 picks one)")
    parser.add_argument("--http", default=DEFAULT_HTTP, metavar="HOST:PORT",
                        help=f"OTLP/HTTP address (default {DEFAULT_HTTP}; 'off' to disable; port 0 picks one)")
    # numbers are checked by run(): a bad one is one line and exit 2, as every user error
    parser.add_argument("--max-bytes", default=DEFAULT_MAX_BYTES, metavar="BYTES",
                        help="largest request accepted, after decompression (default 16 MiB)")
    parser.add_argument("--max-in-flight", default=None, metavar="BYTES",
                        help="request bytes being read, converted and written at once, per process, past which "
                             "exporters are told to retry later (RESOURCE_EXHAUSTED / 503; default 64 MiB or 4x "
                             "--max-bytes)")
    parser.add_argument("--max-concurrent", default=DEFAULT_MAX_CONCURRENT, metavar="N",
                        help="OTLP/HTTP connections open and OTLP/gRPC calls in progress at once, per process; "
                             f"beyond, 503 / RESOURCE_EXHAUSTED (default {DEFAULT_MAX_CONCURRENT})")
    parser.add_argument("--read-timeout", default=DEFAULT_READ_TIMEOUT, metavar="SECONDS",
                        help="an OTLP/HTTP request must arrive whole within this (and a kept-alive connection "
                             f"idles no longer), or its connection is closed (default {DEFAULT_READ_TIMEOUT:g})")
    parser.add_argument("--tls-cert", default=None, metavar="FILE",
                        help="PEM certificate (chain): serve gRPC and HTTP over TLS only (with --tls-key)")
    parser.add_argument("--tls-key", default=None, metavar="FILE", help="PEM private key of --tls-cert")
    parser.add_argument("--auth-token-file", default=None, metavar="FILE",
                        help="file holding a bearer token: requests without 'authorization: Bearer <token>' are "
                             "refused (gRPC UNAUTHENTICATED, HTTP 401)")
    parser.add_argument("--workers", default=1, metavar="N",
                        help="receiver processes sharing the ports (SO_REUSEPORT), to use more than one core")
    parser.add_argument("--compact-after", default=60.0, metavar="SECONDS",
                        help="merge an hour's files into one, with the span facts, once no file came for this long, "
                             "and every hour's at a clean stop (default 60; 0: never)")
    parser.add_argument("--compact-only", action="store_true",
                        help="do not listen: compact every hour folder already in --out (written by an earlier or "
                             "a running collect) and exit")
    parser.add_argument("--watch", action="store_true",
                        help="attribute each denial as its spans are acknowledged, with analyze's rules and clock "
                             "model, and print a line per denial (and a correction line when a later span changes "
                             "the answer) on stdout")
    parser.add_argument("--watch-window", default=DEFAULT_WATCH_WINDOW_S, metavar="SECONDS",
                        help="--watch keeps the spans and logs that arrived within this many seconds "
                             f"(default {DEFAULT_WATCH_WINDOW_S:g})")
    parser.add_argument("--watch-max-spans", default=DEFAULT_WATCH_MAX_SPANS, metavar="N",
                        help="--watch keeps at most about this many spans, the latest arrivals "
                             f"(default {DEFAULT_WATCH_MAX_SPANS:,})")
    rule_options.add(parser, note="; with --watch, as jitrace analyze takes it")
    parser.add_argument("--metrics", default=None, metavar="HOST:PORT",
                        help="with --watch: serve the watch's metrics for Prometheus at http://HOST:PORT/metrics "
                             "(port 0 picks one)")
    parser.add_argument("--metrics-otlp", default=None, metavar="URL",
                        help="with --watch: push the watch's metrics as OTLP to URL: http://HOST:4317 (gRPC) or "
                             "http://HOST:4318/v1/metrics (HTTP)")
    parser.add_argument("--metrics-interval", default=10.0, metavar="SECONDS",
                        help="seconds between two OTLP metrics exports (default 10; the last values at the stop)")
    parser.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)  # internal: parent's pid
    parser.add_argument("--announce", type=int, default=None, help=argparse.SUPPRESS)  # internal: the watch's pipe
    parser.add_argument("--watch-process", type=int, default=None, help=argparse.SUPPRESS)  # internal: be the watch


def _addr(value: str, flag: str) -> str | None:
    if value.lower() in ("off", "none", ""):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"{flag} {value!r}: expected HOST:PORT")
    return value


def _number(value: object, flag: str, *, whole: bool, zero: bool = False, most: float = math.inf) -> float:
    """``value`` as a finite number greater than 0 (or equal to it with ``zero``) and at most ``most``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    ok = math.isfinite(number) and (number >= 0 if zero else number > 0) and number <= most
    if whole:
        ok = ok and number == int(number)
    if not ok:
        what = "a whole number" if whole else "a number of seconds"
        if most < math.inf:
            bounds = f"{0 if zero else 1} to {int(most) if whole else most}"
        else:
            bounds = "0 or more" if zero else ("1 or more" if whole else "greater than 0")
        raise UserError(f"{flag} {str(value)[:40]!r}: expected {what}, {bounds}")
    return int(number) if whole else number


def _check_numbers(args: argparse.Namespace) -> None:
    """Every numeric option is finite and in range; ``args`` gets the parsed numbers."""
    args.max_bytes = _number(args.max_bytes, "--max-bytes", whole=True, most=2**31 - 1)  # gRPC's int limit
    if args.max_in_flight is not None:
        args.max_in_flight = _number(args.max_in_flight, "--max-in-flight", whole=True)
    args.max_concurrent = _number(args.max_concurrent, "--max-concurrent", whole=True, most=100_000)
    args.read_timeout = _number(args.read_timeout, "--read-timeout", whole=False)
    args.workers = _number(args.workers, "--workers", whole=True, most=64)
    args.compact_after = _number(args.compact_after, "--compact-after", whole=False, zero=True)
    args.watch_window = _number(args.watch_window, "--watch-window", whole=False)
    args.watch_max_spans = _number(args.watch_max_spans, "--watch-max-spans", whole=True)
    args.metrics_interval = _number(args.metrics_interval, "--metrics-interval", whole=False)
    if (args.metrics is not None or args.metrics_otlp is not None) and not args.watch:
        raise UserError("--metrics and --metrics-otlp publish the watch's figures: add --watch")
    if rule_options.command_line(args) and not args.watch:
        raise UserError("--leeway, --window, --log-window and --log-patterns set the watch's rules: add --watch")
    if args.metrics is not None:
        _addr(args.metrics, "--metrics")
    if args.metrics_otlp is not None:
        from jitrace.collect.metrics import check_otlp_url

        check_otlp_url(args.metrics_otlp)


def run(args: argparse.Namespace) -> int:
    import gc

    # Each batch makes thousands of short-lived dicts and tuples that never form cycles: collect rarely, and never
    # rescan what was imported at start.
    gc.freeze()
    gc.set_threshold(200_000, 50, 50)
    _check_numbers(args)
    if args.compact_only:
        return _compact_only(Path(args.out))
    if args.watch_process is not None:
        from jitrace.collect import watch

        return watch.serve(args)
    from jitrace.collect import _access

    access = _access.load(args.tls_cert, args.tls_key, args.auth_token_file)
    grpc_addr, http_addr = _addr(args.grpc, "--grpc"), _addr(args.http, "--http")
    child = args.worker_of is not None
    if child:
        _die_with_parent()
    shared = args.workers > 1 or child
    from jitrace.analyzer.otlp import (
        from_json,  # noqa: F401
        from_protobuf,  # noqa: F401  (the converters: imported now, not by the first batch)
    )

    receiver = Receiver(args.out, grpc_addr, http_addr, max_bytes=args.max_bytes, reuse_port=shared,
                        clean=not child, in_flight_bytes=args.max_in_flight, max_concurrent=args.max_concurrent,
                        read_timeout=args.read_timeout, access=access)
    if not child:
        for flag, addr in (("--grpc", grpc_addr), ("--http", http_addr)):
            warning = _access.exposure_warning(flag, addr, access)
            if warning:
                print(warning, file=sys.stderr, flush=True)
    watching = None
    if child and args.announce is not None:  # the watch process is told of each file on its pipe
        from jitrace.collect._announce import announcer

        receiver.writer.on_commit = announcer(args.announce)
    elif args.watch:
        from jitrace.collect import _announce

        watching = _announce.start_process(args)
        receiver.writer.on_commit = _announce.announcer(watching.fd)
        args.announce = watching.fd  # the workers write to the same pipe
    stop = StopSignals()
    try:
        grpc_port, http_port = receiver.start()
    except UserError:
        if watching is not None:
            watching.stop()
        raise
    host = lambda a: a.rpartition(":")[0] if a else None  # noqa: E731
    grpc_at = f"{host(receiver.grpc_addr)}:{grpc_port}" if grpc_port else None
    http_at = f"{host(receiver.http_addr)}:{http_port}" if http_port else None
    if child:
        print("ready", flush=True)  # to the parent's pipe: this process is serving (see _spawn_workers)
    children = [] if child else _spawn_workers(args, grpc_at, http_at)
    compactor = None
    if not child and args.compact_after > 0:  # one compactor per folder: the parent's
        from jitrace.collect.compact import Compactor

        compactor = Compactor(receiver.out, args.compact_after)
    if not child:
        served = (f"; metrics at http://{host(args.metrics)}:{watching.prometheus_port}/metrics"
                  if watching is not None and watching.prometheus_port else "")
        print(f"jitrace collect: listening grpc={grpc_at or 'off'} http={http_at or 'off'}, writing {args.out}"
              + (f" ({args.workers} processes)" if children else "") + (", watching" if watching else "") + served,
              file=sys.stderr, flush=True)
    ticks = 0
    every = max(1, round(min(10.0, args.compact_after) / 0.5))  # look for idle hours every 10 s, or sooner
    try:
        while not stop.wait(0.5):
            if child and os.getppid() != args.worker_of:
                break  # the parent is gone (PR_SET_PDEATHSIG covers Linux; this covers the rest)
            ticks += 1
            if compactor is not None and ticks % every == 0:
                compactor.run()
    finally:
        for proc in children:
            proc.terminate()
        receiver.stop()
        for proc in children:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if watching is not None:  # every receiver has stopped: a last tick over every acknowledged batch
            watching.stop()
    if compactor is not None:
        compactor.run(everything=True)
    if not child:
        s = receiver.stats
        refused = receiver.refusals()
        print(f"jitrace collect: stopped; {s['spans']} spans, {s['logs']} logs written, {s['rejected']} rejected"
              + (f"; requests refused or lost: {refused}" if refused else "")
              + (" by this process" if children else ""), file=sys.stderr, flush=True)
        if compactor is not None and compactor.files:
            print(compactor.summary(), file=sys.stderr, flush=True)
    return 0


def _compact_only(out: Path) -> int:
    from jitrace.collect import compact

    if not out.is_dir():
        raise UserError(f"--out {out}: no such folder")
    compactor = compact.Compactor(out)
    compactor.run(everything=True, wait=True)  # a running receiver's compactor may hold the lock: wait for it
    print(compactor.summary(), file=sys.stderr, flush=True)
    return 0


WORKER_START_S = 60.0


def _spawn_workers(args: argparse.Namespace, grpc_at: str | None, http_at: str | None) -> list:
    """Start ``--workers - 1`` more receivers on the ports this process bound (it already cleaned the folder), and
    return once each one is serving. The kernel hands each new connection to one of the processes listening then:
    had "listening" been printed before the workers bound the ports, exporters that connect at once (and keep their
    connection, as gRPC does) would all land on this process and the workers would idle."""
    procs = []
    for _ in range(args.workers - 1):
        procs.append(subprocess.Popen([
            sys.executable, "-m", "jitrace.analyzer.cli", "collect", "--out", str(args.out),
            "--grpc", grpc_at or "off", "--http", http_at or "off", "--max-bytes", str(args.max_bytes),
            "--worker-of", str(os.getpid()), "--max-concurrent", str(args.max_concurrent),
            "--read-timeout", repr(args.read_timeout),
            *(["--max-in-flight", str(args.max_in_flight)] if args.max_in_flight is not None else []),
            *(["--tls-cert", args.tls_cert, "--tls-key", args.tls_key] if args.tls_cert else []),
            *(["--auth-token-file", args.auth_token_file] if args.auth_token_file else []),
            *(["--announce", str(args.announce)] if args.announce is not None else []),
        ], stdout=subprocess.PIPE, pass_fds=() if args.announce is None else (args.announce,)))
    deadline = time.monotonic() + WORKER_START_S
    for proc in procs:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else b""
        proc.stdout.close()
        if line.strip() != b"ready":
            for p in procs:
                p.kill()
            raise UserError(f"--workers: a receiver process did not start within {WORKER_START_S:.0f} s")
    return procs


def _die_with_parent() -> None:
    """A worker gets SIGTERM (and flushes) when its parent dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
