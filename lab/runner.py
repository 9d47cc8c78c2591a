"""Runs a scenario: starts the receiver and every service as its own instrumented process, drives the calls,
writes the ground truth, and stops everything (whatever happens).

Output folder: the receiver's files (``spans/``, ``logs/``), ``labels.jsonl`` (one row per denied call with the
cause the lab injected), ``calls.jsonl`` (every call and its outcome) and ``params.json``.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jitrace.analyzer.errors import UserError
from jitrace.collect import Receiver
from jitrace.collect.compact import Compactor
from jitrace.collect.watch import OnCommit
from jitrace.lab import jitlab_pb2, jitlab_pb2_grpc, scenarios
from jitrace.lab.scenarios import Call, Scenario

DENIALS = (7, 16)
START_TIMEOUT_S = 30.0


def faketime_library() -> str | None:
    """libfaketime's preload library: the system's where the distribution installed one, else the one the PyPI
    package ``libfaketime`` ships (the ``lab`` extra), so a bare machine skews clocks too."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    if found:
        return found[0]
    spec = importlib.util.find_spec("libfaketime")  # located, not imported: the package sets itself up on import
    if spec is None or not spec.submodule_search_locations:
        return None
    shipped = Path(next(iter(spec.submodule_search_locations))) / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    return str(shipped) if shipped.is_file() else None


def _write_key(path: Path, private: bool) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private_path, public_path = path.with_suffix(".key"), path.with_suffix(".pub")
    private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


class Mesh:
    """The lab's processes. Each one binds port 0 and prints ``PORT <n>``; ``close()`` stops them all."""

    def __init__(self, run_dir: Path, otlp_grpc_port: int, log: Callable[[str], None],
                 otlp_http_port: int | None = None) -> None:
        self._dir = run_dir
        self._endpoints = {"grpc": f"http://127.0.0.1:{otlp_grpc_port}"}
        if otlp_http_port:
            self._endpoints["http/protobuf"] = f"http://127.0.0.1:{otlp_http_port}"
        self._procs: list[tuple[str, subprocess.Popen[str]]] = []
        self._log = log
        bindir = Path(sys.executable).parent
        self._instrument = str(bindir / "opentelemetry-instrument")

    def _env(self, service: str, host: str, skew_s: int, instrumented: bool, protocol: str,
             jitrace: bool = True) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JITRACE_", "FAKETIME"))}
        env.pop("LD_PRELOAD", None)
        # the runner's pid: a service that outlives it exits (_common.serve_until_stopped), even one that starts to
        # watch for that only after the runner is gone
        env.update(PYTHONUNBUFFERED="1", JITRACE_REFRESH_BEFORE_S="1", JITRACE_LAB_RUNNER_PID=str(os.getpid()))
        if instrumented:
            env.update(
                OTEL_SERVICE_NAME=service,
                OTEL_EXPORTER_OTLP_ENDPOINT=self._endpoints.get(protocol, self._endpoints["grpc"]),
                OTEL_EXPORTER_OTLP_PROTOCOL=protocol if protocol in self._endpoints else "grpc",
                OTEL_EXPORTER_OTLP_INSECURE="true",
                OTEL_TRACES_EXPORTER="otlp",
                OTEL_METRICS_EXPORTER="none",
                OTEL_LOGS_EXPORTER="otlp",  # opentelemetry-instrumentation-logging ships the services' logs
                # Each process is its own host, so each is its own clock domain (docs/contract.md, Clocks).
                OTEL_RESOURCE_ATTRIBUTES=f"host.name={host}",
                OTEL_BSP_SCHEDULE_DELAY="200",
                OTEL_BLRP_SCHEDULE_DELAY="200",
            )
            if not jitrace:  # OpenTelemetry's gRPC spans and log export stay; jitrace's instrumentor is off
                env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "jitrace"
        if skew_s:
            library = faketime_library()
            if library is None:
                raise UserError("clock skew needs libfaketime: pip install 'jitrace[lab]'")
            # DONT_FAKE_MONOTONIC: without it timed waits hang; only the wall clock is skewed.
            env.update(LD_PRELOAD=library, FAKETIME=f"{skew_s:+d}s", DONT_FAKE_MONOTONIC="1")
        return env

    def start(self, service: str, module: str, args: list[str], *, host: str | None = None, skew_s: int = 0,
              instrumented: bool = True, protocol: str = "grpc", jitrace: bool = True) -> int:
        """Start ``python -m jitrace.lab.<module>`` and return the port it bound; it exports over OTLP
        ``protocol`` (``grpc`` or ``http/protobuf``) to the receiver."""
        prefix = [self._instrument] if instrumented else []
        cmd = [*prefix, sys.executable, "-m", f"jitrace.lab.{module}", *args]
        stderr = open(self._dir / f"{service}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
                                env=self._env(service, host or f"{service}-host", skew_s, instrumented, protocol,
                                              jitrace))
        stderr.close()
        self._procs.append((service, proc))
        return self._read_port(service, proc)

    def _read_port(self, service: str, proc: subprocess.Popen[str]) -> int:
        assert proc.stdout is not None
        stdout: IO[str] = proc.stdout
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stdout], [], [], 0.2)
            if ready:
                line = stdout.readline()
                if line.startswith("PORT "):
                    return int(line.split()[1])
                if not line and proc.poll() is not None:
                    break
        log_path = self._dir / f"{service}.log"
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:]) or "(empty)"
        raise UserError(f"lab service {service} did not start; the end of {log_path}: {tail}")

    def close(self) -> None:
        """SIGTERM everyone (they flush their exporters), then kill whoever is still there."""
        for _, proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for service, proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._log(f"lab: {service} did not stop on SIGTERM; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self._procs.clear()


def _start_services(mesh: Mesh, s: Scenario, run_dir: Path) -> int:
    key, public = _write_key(run_dir / "issuer", private=True)
    stray, _ = _write_key(run_dir / "stray", private=True)
    # The issuer exports over OTLP/HTTP, the others over OTLP/gRPC: both of the receiver's ways in are used.
    issuer = mesh.start("issuer", "issuer", ["--key", str(key), "--stray-key", str(stray)], skew_s=s.issuer_skew_s,
                        protocol="http/protobuf")
    replica_args = []
    for r in s.replicas:
        port = mesh.start(f"inventory-{r.name}", "backend",
                          ["--replica", r.name, "--policy", r.policy, "--public-key", str(public),
                           *([] if r.instrumented and r.jitrace else ["--no-error-details"]),
                           *([] if r.jitrace else ["--no-jitrace"])],
                          skew_s=r.skew_s, instrumented=r.instrumented, jitrace=r.jitrace)
        replica_args += ["--replica", f"{r.name}=127.0.0.1:{port}"]
    return mesh.start("gateway", "gateway", ["--issuer", f"127.0.0.1:{issuer}", *replica_args],
                      skew_s=s.gateway_skew_s)


def _drive(gateway_port: int, s: Scenario, seed: int, workers: int) -> list[dict[str, Any]]:
    """Run every flow (flows in parallel, the calls of a flow in order); one result row per call."""
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway_port}")
    stub = jitlab_pb2_grpc.GatewayStub(channel)
    rng = random.Random(seed)
    # Spread flow starts over a couple of seconds so healthy traffic surrounds every fault.
    starts = [rng.uniform(0, 2.0) for _ in s.flows]

    def run_flow(flow: list[Call], start: float) -> list[dict[str, Any]]:
        rows = []
        select.select([], [], [], start)
        for call in flow:
            if call.before_s:
                select.select([], [], [], call.before_s)
            try:
                outcome = stub.Do(jitlab_pb2.Task(**call.task), timeout=60)
            except grpc.RpcError as err:  # the gateway failed: counted as an error, the run goes on
                outcome = jitlab_pb2.Outcome(code=err.code().value[0], detail=err.details() or "")
            rows.append({"trace_id": outcome.trace_id, "expected": call.cause, "code": outcome.code,
                         "reason": outcome.reason, **{k: call.task.get(k) for k in ("method", "replica", "aio",
                                                                                     "token_mode", "subject",
                                                                                     "role")}})
        return rows

    try:
        with futures.ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run_flow, s.flows, starts))
    finally:
        channel.close()
    return [row for rows in results for row in rows]


_OUTPUTS = ("spans", "logs", "lab-run", "labels.jsonl", "calls.jsonl", "params.json")
MARKER = ".jitrace-lab"  # written first: a run that failed half-way is still known as the lab's own


def _prepare(out: Path) -> None:
    """An empty folder, or one holding an earlier lab run, finished or not (its entries are replaced: its spans
    would mix with this run's). Only the names a run writes are removed."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: not a folder")
    present = [name for name in _OUTPUTS if (out / name).exists()]
    if present and not ((out / MARKER).is_file() or (out / "params.json").is_file()):
        raise UserError(f"--out {out}: already holds {present[0]} but was not written by jitrace lab; "
                        "choose an empty folder")
    for name in present:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by jitrace lab: its entries are replaced by the next run\n")


def run(scenario: str, out_dir: str | Path, *, calls: int = 8, seed: int = 7, drift: str = "server",
        workers: int = 16, log: Callable[[str], None] = print, on_commit: OnCommit | None = None,
        receiver_ports: tuple[int, int | None] | None = None) -> dict[str, Any]:
    """Run ``scenario`` into ``out_dir``; returns params.json's content (with the outcome counts).

    ``on_commit``: told of each file the lab's receiver writes, once durable (a watch: ``jitrace demo --watch``).
    ``receiver_ports``: the services export to a receiver already running on these OTLP/gRPC and OTLP/HTTP ports
    (a ``jitrace collect`` of the caller's), which then holds the spans and logs; the lab starts none."""
    try:
        s = scenarios.build(scenario, calls=calls, seed=seed, drift=drift)
    except ValueError as err:
        raise UserError(str(err)) from None
    out = Path(out_dir)
    _prepare(out)
    run_dir = out / "lab-run"
    run_dir.mkdir(exist_ok=True)
    began = time.monotonic()
    receiver = None
    if receiver_ports is None:
        receiver = Receiver(out, grpc_addr="127.0.0.1:0", http_addr="127.0.0.1:0")
        receiver.writer.on_commit = on_commit
        grpc_port, http_port = receiver.start()
    else:
        grpc_port, http_port = receiver_ports
    try:
        mesh = Mesh(run_dir, grpc_port, log, otlp_http_port=http_port)
        try:
            log(f"lab: starting {2 + len(s.replicas)} services for scenario {scenario}")
            gateway_port = _start_services(mesh, s, run_dir)
            log(f"lab: driving {sum(len(f) for f in s.flows)} calls")
            rows = _drive(gateway_port, s, seed, workers)
        finally:
            mesh.close()  # the services flush their spans and logs on SIGTERM
    finally:
        if receiver is not None:
            receiver.stop()
        for key in run_dir.glob("*.key"):  # the signing keys lived for this run only
            key.unlink()
    if receiver is not None:
        Compactor(out).run(everything=True)  # as `jitrace collect` leaves its folder at a clean stop
    for row in rows:
        row["scenario"] = scenario
    denied = [r for r in rows if r["code"] in DENIALS]
    with open(out / "labels.jsonl", "w") as f:
        for r in denied:
            if r["expected"]:
                f.write(json.dumps({"trace_id": r["trace_id"], "cause": r["expected"], "scenario": scenario}) + "\n")
    with open(out / "calls.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    params = {
        "scenario": scenario, "calls_per_cause": calls, "seed": seed, "drift": s.notes or None,
        "replicas": [asdict(r) for r in s.replicas], "gateway_skew_s": s.gateway_skew_s,
        "issuer_skew_s": s.issuer_skew_s, "skew_s": scenarios.SKEW_S, "short_lifetime_s": scenarios.SHORT_S,
        "healthy_lifetime_s": scenarios.HEALTHY_LIFETIME_S,
        "counts": {
            "calls": len(rows),
            "injected": sum(1 for r in rows if r["expected"]),
            "denied": len(denied),
            "labelled": sum(1 for r in denied if r["expected"]),
            # an injected fault the backend let through, a healthy call denied, any other failure: lab bugs
            "missed": sum(1 for r in rows if r["expected"] and r["code"] not in DENIALS),
            "unexpected_denials": sum(1 for r in denied if not r["expected"]),
            "errors": sum(1 for r in rows if r["code"] not in (0, *DENIALS)),
        },
        "seconds": round(time.monotonic() - began, 1),
    }
    if s.candidate:  # the revision to replay the recorded decisions under, and where its files are
        model, policy = scenarios.policy_files(s.candidate)
        params["candidate"] = {"version": s.candidate, "model": model, "policy": policy}
    (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    return params
