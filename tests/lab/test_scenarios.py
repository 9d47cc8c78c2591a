"""The scenarios as data: what each one injects, and that healthy traffic never trips a fault by accident."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitrace.instrumentation import contract
from jitrace.lab import scenarios

FAULTS = [s for s in scenarios.SCENARIOS if s not in ("healthy", "mixed")]


def test_every_cause_of_the_contract_has_a_scenario():
    assert set(FAULTS) == set(contract.CAUSES)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(scenarios.SCENARIOS), calls=st.integers(1, 12), seed=st.integers(0, 10_000),
       drift=st.sampled_from(scenarios.DRIFTS))
def test_a_scenario_injects_its_cause_calls_times_among_as_many_healthy_calls(name, calls, seed, drift):
    s = scenarios.build(name, calls=calls, seed=seed, drift=drift)
    injected = [c.cause for flow in s.flows for c in flow if c.cause]
    healthy = [c for flow in s.flows for c in flow if not c.cause]
    expected = {"healthy": set(), "mixed": set(FAULTS)}.get(name, {name})
    assert set(injected) == expected
    for cause in expected:
        assert injected.count(cause) == calls
    assert len(healthy) >= calls * max(1, len(expected))
    names = {r.name for r in s.replicas}
    assert all(c.task["replica"] in names for flow in s.flows for c in flow)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(scenarios.SCENARIOS), seed=st.integers(0, 10_000))
def test_healthy_calls_are_allowed_by_the_replica_they_go_to(name, seed):
    s = scenarios.build(name, calls=4, seed=seed)
    policy = {r.name: r.policy for r in s.replicas}
    for flow in s.flows:
        for call in flow:
            if call.cause:
                continue
            task = call.task
            assert task["token_mode"] in ("fresh", "refreshing")
            assert not task.get("flavor") and not task.get("slow_s") and not task.get("grant_delay_s")
            if task["method"] == "Write":  # v1 lets only admins write; v2 editors too; viewers never
                allowed = {"v1": {"admin"}, "v2": {"admin", "editor"}}[policy[task["replica"]]]
                assert task["role"] in allowed
            # a token that must live through the call, whatever the lab's clock skew
            if task["token_mode"] == "fresh":
                assert task["lifetime_s"] > scenarios.SKEW_S


def test_mixed_runs_every_replica_kind():
    s = scenarios.build("mixed")
    assert {(r.policy, r.skew_s, r.instrumented) for r in s.replicas} == {
        ("v2", 0, True), ("v1", 0, True), ("v2", scenarios.SKEW_S, True), ("v2", 0, False)}


@pytest.mark.parametrize("drift, where", [("server", "replica"), ("client", "gateway"), ("issuer", "issuer")])
def test_clock_drift_skews_one_host(drift, where):
    s = scenarios.build("clock_drift", drift=drift)
    skewed = {"replica": any(r.skew_s for r in s.replicas), "gateway": bool(s.gateway_skew_s),
              "issuer": bool(s.issuer_skew_s)}
    assert [k for k, v in skewed.items() if v] == [where]


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        scenarios.build("nope")
    with pytest.raises(ValueError, match="unknown clock drift"):
        scenarios.build("clock_drift", drift="moon")


@settings(max_examples=30, deadline=None)
@given(calls=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_policy_rollout_records_under_v1_with_v2_the_candidate(calls, seed):
    s = scenarios.build("policy_rollout", calls=calls, seed=seed)
    assert {r.policy for r in s.replicas} == {"v1"} and s.candidate == "v2"
    tasks = [(c.task, c.cause) for flow in s.flows for c in flow]
    # v2 changes exactly one thing: editors may write. The scenario's editor writes are the calls it would flip.
    assert sum(1 for t, _ in tasks if (t["role"], t["method"]) == ("editor", "Write")) == calls
    assert sum(1 for t, cause in tasks if (t["role"], t["method"]) == ("viewer", "Write")) == calls
    assert sum(1 for _, cause in tasks if cause == "grant_not_active") == calls
    for task, cause in tasks:
        if cause is None:  # healthy: allowed by v1 (and so by v2, which only adds a permission)
            assert task["method"] != "Write" or task["role"] == "admin"
            assert not task.get("grant_delay_s") and task["token_mode"] in ("fresh", "refreshing")
