"""A lab run where the faulty replica is traced by OpenTelemetry but NOT instrumented by jitrace (`jitrace lab
logs_only`): its spans carry no jit.* facts and its denials no ErrorInfo, only its own log lines (exported over
OTLP by OpenTelemetry's logging instrumentation) say why. The analyzer must get each cause right from them, show
the lines, and keep `unexplained` for the replica that exports nothing."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from jitrace.analyzer import cli
from jitrace.analyzer.score import read_table, score
from jitrace.lab import scenarios

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lab") / "logs_only"
    assert cli.main(["lab", "logs_only", "--out", str(out), "--calls", "2"]) == 0
    assert cli.main(["analyze", str(out / "spans"), str(out / "logs"), "--out", str(out / "out"), "--quiet"]) == 0
    return out


def _attributions(run: Path) -> pd.DataFrame:
    con = duckdb.connect(str(run / "out" / "jitrace.duckdb"), read_only=True)
    try:
        df = con.execute("SELECT trace_id, cause, rule, confidence, evidence FROM attributions").df()
    finally:
        con.close()
    labels = pd.read_json(run / "labels.jsonl", lines=True, dtype={"trace_id": str})
    return labels.merge(df, on="trace_id", how="left", suffixes=("_label", ""))


def test_every_logged_fault_gets_its_cause(run):
    result = score(read_table(run / "out" / "attributions.parquet", "A"), read_table(run / "labels.jsonl", "L"))
    assert set(result["causes"]) == set(scenarios.LOGGED_CAUSES)
    assert result["accuracy"] == 1.0, result["confusion"]


def test_the_replica_spans_carry_no_jit_facts(run):
    spans = pd.concat([pd.read_parquet(f) for f in (run / "spans").rglob("*.parquet")], ignore_index=True)
    r5 = spans[spans["service"] == "inventory-r5"]
    assert len(r5) > 0 and not r5["attributes"].str.contains('"jit.', regex=False).any()


def test_causes_only_logs_can_tell_come_from_a_log_pattern_with_the_line_as_evidence(run):
    df = _attributions(run)
    by_log = df[df["rule"].str.startswith("log_pattern:")]
    # the replica's verifier and casbin left nothing on the spans: these causes can only come from its log lines
    assert {"token_expired", "token_invalid", "policy_mismatch"} <= set(by_log["cause_label"])
    for row in by_log.itertuples():
        ev = json.loads(row.evidence)
        assert row.confidence <= 0.6
        assert " inventory-r5 WARN replica r5 denied " in ev["log_line"] and ev["log_line"] in ev["logs"]
    for row in df.itertuples():  # every denial on r5 shows the replica's line, whichever rule decided
        assert any(" inventory-r5 " in line for line in json.loads(row.evidence)["logs"]), row


def test_report_shows_the_lines_under_each_cause(run):
    page = (run / "out" / "report.html").read_text()
    for cause in scenarios.LOGGED_CAUSES:
        section = page.split(f'<h3 id="logs-{cause}">', 1)[1].split("<h3", 1)[0]
        assert "inventory-r5 WARN replica r5 denied" in section, cause
