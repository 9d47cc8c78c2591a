"""Exporter outage: the OTLP collector is down for a while, then back (issue 7).

A real service and client (one subprocess, OTel's gRPC instrumentation + jitrace) export over real OTLP/gRPC through
a BatchSpanProcessor with a 512-span queue to a collector that is down while 2 000 calls are made, then comes back
on the same port. What a user cares about: every call's outcome is what it would be anyway, the process's memory
stays bounded, the spans that could not be kept are counted (by the SDK's own self-metrics), and spans made after
the collector returns arrive. The figures go to RELIABILITY.md ("Instrumentation"); no timing is asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import HERE, OtlpReceiver, mint, public_pem

from jitrace.instrumentation import contract as c

pytestmark = pytest.mark.slow

DOWN_CALLS = 2000
MAX_RSS_GROWTH_KB = 32 * 1024  # the queue holds 512 spans (a few MB at most); unbounded would be ~2 spans per call


class Worker:
    def __init__(self, tmp: Path, otlp_port: int) -> None:
        now = int(time.time())
        tokens = {"valid": mint(), "expired": mint(iat=now - 900, nbf=now - 900, exp=now - 600),
                  "after": mint(jti="after-recovery")}
        (tmp / "tokens.json").write_text(json.dumps(tokens))
        (tmp / "public.pem").write_bytes(public_pem())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JITRACE_"))}
        env.update({"JIT_OTLP": f"127.0.0.1:{otlp_port}", "JIT_TOKENS": str(tmp / "tokens.json"),
                    "JIT_PUBLIC_KEY_FILE": str(tmp / "public.pem"), "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": "true",
                    "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])})
        self.proc = subprocess.Popen([sys.executable, str(HERE / "outage_worker.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.killer = threading.Timer(240, self.proc.kill)  # whatever happens, it does not outlive the test
        self.killer.start()
        assert self.proc.stdout.readline().strip() == "ready", self.proc.stderr.read()[-2000:]

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()[-2000:]
        return json.loads(line)

    def close(self) -> str:
        try:
            _, err = self.proc.communicate("quit\n", timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.killer.cancel()
        return err


def test_collector_down_then_back(tmp_path):
    collector = OtlpReceiver()
    port = collector.port
    collector.stop()  # down from the start: nothing listens on the port
    worker = Worker(tmp_path, port)
    try:
        warm = worker.ask("calls 200")
        assert warm["codes"] == {"valid:OK": 100, "expired:UNAUTHENTICATED": 100}
        before = worker.ask("stats")

        down = worker.ask(f"calls {DOWN_CALLS}")
        # outcomes exactly as without telemetry: the valid token passes, the expired one is refused
        assert down["codes"] == {"valid:OK": DOWN_CALLS // 2, "expired:UNAUTHENTICATED": DOWN_CALLS // 2}
        during = worker.ask("stats")
        growth_kb = during["rss_kb"] - before["rss_kb"]
        assert growth_kb < MAX_RSS_GROWTH_KB, f"memory grew by {growth_kb} kB over {DOWN_CALLS} calls"
        # 2 spans per call cannot all fit the 512-span queue: what is lost is counted by the SDK
        lost = during["processor_dropped"] + during["export_failed"]
        assert during["processor_dropped"] > 0
        assert lost > 0

        collector = OtlpReceiver(port)  # back, on the same port
        after = worker.ask("after 20")
        assert after["codes"] == {"OK": 20}
        deadline = time.monotonic() + 60
        arrived: list[dict] = []
        while time.monotonic() < deadline:
            worker.ask("flush")
            arrived = [s for s in collector.spans() if s["attributes"].get(c.TOKEN_ID) == "after-recovery"]
            if len(arrived) >= 40:
                break
            time.sleep(0.5)
        # every span made after the collector returned arrives: a client and a server span per call
        assert sorted(s["kind"] for s in arrived).count("server") == 20
        assert sorted(s["kind"] for s in arrived).count("client") == 20
        end = worker.ask("stats")
        assert end["exported"] >= 40
        figures = {"calls_while_down": DOWN_CALLS, "rss_growth_kb": growth_kb, **{f"down_{k}": v for k, v in
                   during.items()}, "exported_after_recovery": len(arrived)}
        print("OUTAGE_FIGURES " + json.dumps(figures))
    finally:
        collector.stop()
        worker.close()
