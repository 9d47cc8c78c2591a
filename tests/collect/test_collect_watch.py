"""``jitrace collect --watch`` on the lab: each denial printed with its injected cause as its spans arrive, the live
answers equal to ``jitrace analyze`` afterwards, the Prometheus counters equal to them (scraped over HTTP), and the
OTLP metrics received by a second ``jitrace collect``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter

import pandas as pd
import pytest
from processes import JITRACE, start_collect
from prometheus_client.parser import text_string_to_metric_families

from jitrace.lab import runner

LINE = re.compile(r"^(\S+) (denial|correction) +trace=(\S+) (.*)$")
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')



def _parse(line: str) -> dict:
    m = LINE.match(line)
    assert m is not None, line
    fields = {k: (json.loads(v) if v.startswith('"') else v) for k, v in FIELD.findall(m.group(4))}
    return {"kind": m.group(2), "trace_id": m.group(3), **fields}


def _scrape(port: int) -> dict[tuple[str, str, str], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jitrace_denials_total":
                counts[(sample.labels["cause"], sample.labels["service"], sample.labels["method"])] = sample.value
    return {k: v for k, v in counts.items() if v}


@pytest.fixture
def sink(tmp_path):
    """A second ``jitrace collect``: receives the watch's OTLP metrics."""
    proc, grpc_port, _, _ = start_collect(tmp_path / "sink")
    yield proc, grpc_port
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.mark.slow
def test_watch_streams_the_mixed_lab_and_equals_the_batch_run(tmp_path, sink):
    sink, sink_grpc = sink
    watch, grpc_port, http_port, ready_line = start_collect(
        tmp_path / "collected", "--workers", "2", "--watch", "--metrics", "127.0.0.1:0",
        "--metrics-otlp", f"http://127.0.0.1:{sink_grpc}", "--metrics-interval", "1", stdout=subprocess.PIPE,
        timeout=120)
    try:
        metrics_port = int(re.search(r"metrics at http://[\d.]+:(\d+)/metrics", ready_line).group(1))
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(watch.stdout.readline, "")), daemon=True)
        reader.start()
        params = runner.run("mixed", tmp_path / "lab", calls=2, receiver_ports=(grpc_port, http_port),
                            log=lambda _: None)
        assert params["counts"]["missed"] == 0 and params["counts"]["errors"] == 0
        labels = pd.read_json(tmp_path / "lab" / "labels.jsonl", lines=True, dtype={"trace_id": str})
        # quiet: every labelled denial has a line and no line came for two seconds
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            count = len(lines)
            time.sleep(2)
            printed = {_parse(x)["trace_id"] for x in lines}
            if count == len(lines) and set(labels.trace_id) <= printed:
                break
        quiet = len(lines)
        final = {}
        for line in lines:
            parsed = _parse(line)
            final[parsed["trace_id"]] = parsed
        # every denial printed with its injected cause
        for trace_id, cause in zip(labels.trace_id, labels.cause, strict=True):
            assert final[trace_id]["cause"] == cause, (trace_id, final[trace_id])
        # the Prometheus counters equal the live attributions
        live = Counter((f["cause"], f["service"], f["method"]) for f in final.values())
        assert _scrape(metrics_port) == dict(live)
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(120)
        reader.join(10)
        stderr = watch.stderr.read()
        watch.stdout.close()
        watch.stderr.close()
    assert watch.returncode == 0, stderr
    assert len(lines) == quiet  # the last tick, at the stop, changed no answer
    assert "jitrace collect --watch:" in stderr and "dropped" not in stderr
    # equal to the batch run on the stored spans
    analyze = subprocess.run([str(JITRACE), "analyze", str(tmp_path / "collected"), "--out", str(tmp_path / "report"),
                              "--quiet"], capture_output=True, text=True, timeout=300)
    assert analyze.returncode == 0, analyze.stderr
    batch = pd.read_parquet(tmp_path / "report" / "attributions.parquet")
    assert len(batch) == len(final)
    for row in batch.itertuples():
        got = final[row.trace_id]
        principal = row.principal if isinstance(row.principal, str) else ""
        assert (got["service"], got["method"], got["principal"], got["cause"], got["confidence"], got["fix"]) == (
            row.service, row.method, principal, row.cause, f"{row.confidence:.2f}", row.fix)
    # the OTLP metrics reached the second collect, the last export holding the same counts
    sink.send_signal(signal.SIGTERM)
    _, sink_err = sink.communicate(timeout=60)
    assert sink.returncode == 0, sink_err
    exported: dict[tuple[str, str, str], float] = {}
    spans_received = 0.0
    for path in sorted((tmp_path / "sink" / "metrics").rglob("*.json"), key=lambda p: p.stat().st_mtime_ns):
        request = json.loads(path.read_text())
        for rm in request["resourceMetrics"]:
            for sm in rm["scopeMetrics"]:
                for metric in sm["metrics"]:
                    points = metric.get("sum", {}).get("dataPoints", [])
                    if metric["name"] == "jitrace_denials_total":
                        exported = {}  # each export holds every series' current value
                        for p in points:
                            a = {kv["key"]: kv["value"]["stringValue"] for kv in p["attributes"]}
                            exported[(a["cause"], a["service"], a["method"])] = float(p["asInt"])
                    elif metric["name"] == "jitrace_spans_received_total":
                        spans_received = float(points[0]["asInt"])
    assert {k: v for k, v in exported.items() if v} == dict(live)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert spans_received >= summary["spans"] > 0
