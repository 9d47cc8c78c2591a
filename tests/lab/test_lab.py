"""Each scenario on a real lab (separate instrumented processes, OTLP export, libfaketime), at a small size.

A run per scenario, started once for the module; the tests then read what the run wrote: the ground truth, the
collected spans, and what the analyzer makes of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jitrace.lab import evaluate, runner, scenarios

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CALLS = 3  # injected denials per cause (and as many healthy calls)
RUNS = [(s, "server") for s in scenarios.SCENARIOS] + [("clock_drift", "client"), ("clock_drift", "issuer")]
IDS = [s if s != "clock_drift" else f"clock_drift-{d}" for s, d in RUNS]
DENIAL_CODES = (7, 16)


class Run:
    def __init__(self, out: Path, params: dict[str, Any]) -> None:
        self.out, self.params = out, params
        self.labels = _jsonl(out / "labels.jsonl")
        self.calls = _jsonl(out / "calls.jsonl")
        files = sorted((out / "spans").rglob("*.parquet"))
        self.spans = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        self.spans["attrs"] = self.spans["attributes"].map(json.loads)
        self._analysis: dict[str, Any] | None = None

    def analysis(self) -> dict[str, Any]:
        """The analyzer's attributions scored against the labels (computed once)."""
        if self._analysis is None:
            self._analysis = evaluate.evaluate(self.out)
        return self._analysis


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    cache: dict[tuple[str, str], Run] = {}

    def get(name: str, drift: str) -> Run:
        if (name, drift) not in cache:
            out = tmp_path_factory.mktemp(f"{name}-{drift}")
            params = runner.run(name, out, calls=CALLS, drift=drift, log=lambda _: None)
            cache[(name, drift)] = Run(out, params)
        return cache[(name, drift)]

    return get


def _expected_causes(name: str) -> set[str]:
    return {"healthy": set(), "mixed": set(scenarios.SCENARIOS) - {"healthy", "mixed"}}.get(name, {name})


@pytest.mark.parametrize("name, drift", RUNS, ids=IDS)
def test_every_injected_fault_is_denied_and_labelled_and_no_healthy_call_is(lab, name, drift):
    run = lab(name, drift)
    counts = run.params["counts"]
    assert counts["missed"] == counts["unexpected_denials"] == counts["errors"] == 0, run.calls
    assert counts["labelled"] == counts["injected"] == CALLS * len(_expected_causes(name))
    assert {row["cause"] for row in run.labels} == _expected_causes(name)
    assert all(row["scenario"] == name for row in run.labels)
    trace_ids = [row["trace_id"] for row in run.calls]
    assert len(set(trace_ids)) == len(trace_ids) and all(len(t) == 32 and int(t, 16) for t in trace_ids)
    params = json.loads((run.out / "params.json").read_text())
    assert params["scenario"] == name and params["calls_per_cause"] == CALLS


@pytest.mark.parametrize("name, drift", RUNS, ids=IDS)
def test_spans_show_each_denial_on_the_gateway_and_where_instrumented_on_the_backend(lab, name, drift):
    run = lab(name, drift)
    spans = run.spans
    code = spans["attrs"].map(lambda a: a.get("rpc.grpc.status_code"))
    denied = spans[code.isin(DENIAL_CODES)]
    # Exactly the labelled calls are denials, each seen by the gateway's client span.
    assert set(denied["trace_id"]) == {row["trace_id"] for row in run.labels}
    for row in run.labels:
        trace = denied[denied["trace_id"] == row["trace_id"]]
        kinds = dict(zip(trace["kind"], trace["service"], strict=False))
        assert kinds.get("CLIENT") == "gateway"
        if row["cause"] == "unexplained":
            assert "SERVER" not in kinds  # the legacy replica is not instrumented
        else:
            assert kinds.get("SERVER", "").startswith("inventory-")
    # Tokens come from the issuer, whose jit.issue spans sit in the calls' traces.
    issued = spans[spans["name"] == "jit.issue"]
    assert len(issued) >= len(run.calls) - sum(1 for c in run.calls if c["token_mode"] == "none") - CALLS


@pytest.mark.parametrize("name, drift", RUNS, ids=IDS)
def test_no_raw_token_reaches_the_collected_files(lab, name, drift):
    run = lab(name, drift)
    files = list((run.out / "spans").rglob("*.parquet")) + list((run.out / "logs").rglob("*.parquet"))
    assert files
    for f in files:
        text = pd.read_parquet(f).to_json()
        assert "eyJ" not in text  # every JWT starts with the base64 of '{"'


@pytest.mark.parametrize("name, drift", [("mixed", "server")], ids=["mixed"])
def test_each_instrumented_denial_has_the_backends_log_line_in_its_trace(lab, name, drift):
    run = lab(name, drift)
    logs = pd.concat([pd.read_parquet(f) for f in (run.out / "logs").rglob("*.parquet")], ignore_index=True)
    denied_logs = logs[logs["body"].str.contains(" denied ", na=False)]
    for row in run.labels:
        if row["cause"] != "unexplained":
            lines = denied_logs[denied_logs["trace_id"] == row["trace_id"]]
            assert len(lines) == 1 and lines["service"].iloc[0].startswith("inventory-"), row


@pytest.mark.parametrize("drift", scenarios.DRIFTS)
def test_each_process_is_its_own_clock_domain_and_the_skewed_one_is_off(lab, drift):
    run = lab("clock_drift", drift)
    hosts = run.spans.groupby("service")["resource"].agg(lambda r: {json.loads(x).get("host.name") for x in r})
    assert all(len(h) == 1 for h in hosts)
    assert len({next(iter(h)) for h in hosts}) == len(hosts)
    # A server span starts after its client span in true time; a skewed clock shows up as a jump between them.
    spans = run.spans
    pairs = spans[spans["kind"] == "CLIENT"].merge(spans[spans["kind"] == "SERVER"], left_on="span_id",
                                                   right_on="parent_span_id", suffixes=("_c", "_s"))
    pairs["gap_s"] = (pairs["start_ns_s"] - pairs["start_ns_c"]) / 1e9
    skewed = {"server": ("gateway", "inventory-r3"), "client": ("gateway", "inventory-r1"),
              "issuer": ("gateway", "issuer")}[drift]
    sign = {"server": 1, "client": 1, "issuer": -1}[drift]
    gaps = pairs[(pairs["service_c"] == skewed[0]) & (pairs["service_s"] == skewed[1])]["gap_s"]
    assert len(gaps) > 0 and (sign * gaps > scenarios.SKEW_S - 2).all()


@pytest.mark.parametrize("name, drift", RUNS, ids=IDS)
def test_the_analyzer_attributes_the_injected_cause(lab, name, drift):
    run = lab(name, drift)
    result = run.analysis()
    assert result["healthy_reported"] == 0, "a healthy call was reported as a denial"
    assert len(result["attributions"]) == len(run.labels)
    for cause in _expected_causes(name):
        recall = result["score"]["causes"][cause]["recall"]
        assert recall >= 0.95, (cause, result["score"]["confusion"])
    if run.labels:
        assert result["correct"] / result["injected"] >= 0.99, result["score"]["confusion"]
