"""`jitrace replay` on the lab: `policy_rollout` runs real gRPC services whose pycasbin enforcers record their
decisions under policy v1 (real signed tokens, the real OpenTelemetry SDK and receiver); replayed under the candidate
v2, the flips must be exactly the calls v2 decides otherwise, and under v1 itself none."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from jitrace.analyzer import cli, errors
from jitrace.analyzer.score import read_table, score
from jitrace.lab import scenarios

pytestmark = pytest.mark.slow

MODEL, V1 = scenarios.policy_files("v1")
_, V2 = scenarios.policy_files("v2")


@pytest.fixture(scope="module")
def rollout(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lab") / "policy_rollout"
    assert cli.main(["lab", "policy_rollout", "--out", str(out), "--calls", "4"]) == 0
    counts = json.loads((out / "params.json").read_text())["counts"]
    assert counts["missed"] == counts["unexpected_denials"] == counts["errors"] == 0, counts
    return out


def _calls(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "calls.jsonl").read_text().splitlines()]


def _replay(run: Path, policy: str, out: Path, *args: str) -> tuple[int, dict, pd.DataFrame]:
    code = cli.main(["replay", str(run / "spans"), "--casbin", MODEL, policy, "--out", str(out), "--quiet", *args])
    return code, json.loads((out / "replay.json").read_text()), pd.read_parquet(out / "flips.parquet")


def test_under_v2_the_flips_are_exactly_the_calls_v2_decides_otherwise(rollout, tmp_path):
    calls = _calls(rollout)
    # v2 adds one permission (editors may write): the editors' writes, which v1 denied, are what it changes
    changed = {c["trace_id"] for c in calls if (c["role"], c["method"]) == ("editor", "Write")}
    assert len(changed) == 4 and {(c["code"], c["reason"]) for c in calls if c["trace_id"] in changed} == {
        (7, "PERMISSION_MISSING")}
    code, summary, flips = _replay(rollout, V2, tmp_path / "v2", "--fail-on-flip", "deny-to-allow")
    assert code == errors.FAIL_ON
    assert set(flips["trace_id"]) == changed and len(flips) == len(changed)
    assert summary["flips"] == {"allow_to_deny": 0, "deny_to_allow": len(changed)}
    assert set(flips["rule"]) == {"p, editor, inventory, write"} and set(flips["principal"]) == {"editor-alice"}
    assert set(flips["method"]) == {"jitrace.lab.Inventory/Write"} and set(flips["policy_version"]) == {"v1"}
    assert [r["value"] for r in summary["by"]["policy_version"]] == ["inventory v1"]
    assert set(summary["by"]["principal"][0]["examples"]) <= changed
    # every call pycasbin decided was replayed; the grant-window denials were decided before it, without a request:
    # counted and named, not guessed
    grant = {c["trace_id"] for c in calls if c["reason"] == "GRANT_NOT_ACTIVE"}
    assert len(grant) == 4
    assert summary["replayed"] == len(calls) - len(grant) and summary["decisions"] == len(calls)
    assert summary["not_replayed"]["no_request"] == len(grant) and sum(summary["not_replayed"].values()) == len(grant)
    named = summary["not_replayed_by"]
    assert {(r["reason"], r["engine"], r["policy_id"]) for r in named} == {("no_request", "jit-grant", "grant-window")}
    assert {r["example"] for r in named} <= grant
    # distinct requests: three subjects, two or three acts each, far fewer than the calls
    assert summary["distinct_requests"] < summary["replayed"]


@pytest.mark.parametrize(("gate", "code"), [("deny-to-allow", errors.FAIL_ON), ("any", errors.FAIL_ON),
                                            ("allow-to-deny", errors.OK), (None, errors.OK)])
def test_fail_on_flip_exit_codes_under_v2(rollout, tmp_path, gate, code):
    assert _replay(rollout, V2, tmp_path / "out", *(["--fail-on-flip", gate] if gate else []))[0] == code


def test_under_v1_itself_nothing_flips(rollout, tmp_path):
    code, summary, flips = _replay(rollout, V1, tmp_path / "v1", "--fail-on-flip", "any")
    assert code == errors.OK and flips.empty and summary["flips"] == {"allow_to_deny": 0, "deny_to_allow": 0}
    assert summary["replayed"] > 0


def test_a_candidate_without_the_viewers_rule_flips_their_allowed_calls(rollout, tmp_path):
    v3 = tmp_path / "v3.csv"
    v3.write_text("".join(f"{line}\n" for line in Path(V1).read_text().splitlines() if "viewer" not in line))
    calls = _calls(rollout)
    allowed_viewers = {c["trace_id"] for c in calls if c["role"] == "viewer" and c["code"] == 0}
    assert allowed_viewers
    code, summary, flips = _replay(rollout, str(v3), tmp_path / "v3", "--fail-on-flip", "allow-to-deny")
    assert code == errors.FAIL_ON and set(flips["trace_id"]) == allowed_viewers
    assert set(flips["flip"]) == {"allow_to_deny"} and set(flips["rule"]) == {"p, viewer, inventory, read"}
    assert _replay(rollout, str(v3), tmp_path / "v3b", "--fail-on-flip", "deny-to-allow")[0] == errors.OK


def test_the_scenarios_ground_truth_is_what_analyze_finds(rollout, tmp_path):
    out = tmp_path / "analyzed"
    assert cli.main(["analyze", str(rollout / "spans"), str(rollout / "logs"), "--out", str(out), "--quiet"]) == 0
    result = score(read_table(out / "attributions.parquet", "A"), read_table(rollout / "labels.jsonl", "L"))
    assert result["accuracy"] == 1.0, result["confusion"]
