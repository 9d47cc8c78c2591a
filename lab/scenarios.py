"""The fault scenarios: which services run (replicas, policy revisions, clock skews) and which calls the driver
makes, each call with the cause it injects (``None`` for healthy traffic).

A scenario injects one cause among healthy calls; ``healthy`` injects none and ``mixed`` every cause but the
client and issuer clock drifts (they skew a clock the other causes rely on). ``logs_only`` (LOG_SCENARIOS) sends
the faults a backend detects to ``r5``, a replica traced by OpenTelemetry but NOT instrumented by jitrace (no jit.*
facts, no ErrorInfo) that logs each denial: only its log lines tell why. ``unexplained``'s ``r4`` exports nothing
at all (no spans, no logs), so for it "unexplained, instrument the server" stays the honest answer.
``policy_rollout`` (REPLAY_SCENARIOS) records decisions under policy v1 while v2 is the candidate (``jitrace replay
--casbin model.conf v2.csv``): editors write (v1 denies, v2 would allow: the flips), viewers write (denied by both),
and grants not yet active (decided before pycasbin, recorded without a request). Token lifetimes
are seconds, so a scenario runs in seconds. Every choice is drawn from a seeded ``random.Random``: a run is repeatable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

SKEW_S = 20  # how far a drifting clock is off: well beyond the short token lifetimes below
SHORT_S = 3  # lifetime of tokens that must expire during a call (>= 2 s left when minted: margin for a busy host)
HEALTHY_LIFETIME_S = 60  # long enough to survive any clock skew of the lab


@dataclass(frozen=True)
class Replica:
    name: str
    policy: str = "v2"
    skew_s: int = 0
    instrumented: bool = True  # runs under opentelemetry-instrument (spans and logs exported); False: nothing
    # jitrace's instrumentor on; False: OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=jitrace, and denials carry no ErrorInfo
    jitrace: bool = True


@dataclass
class Call:
    """One gateway task (fields of ``jitlab.Task``), the cause it injects, and a wait before it in its flow."""

    task: dict[str, Any]
    cause: str | None = None
    before_s: float = 0.0


@dataclass
class Scenario:
    name: str
    replicas: list[Replica]
    gateway_skew_s: int = 0
    issuer_skew_s: int = 0
    flows: list[list[Call]] = field(default_factory=list)  # each flow runs its calls in order
    notes: str = ""
    candidate: str | None = None  # a policy revision to replay the recorded decisions under (jitrace replay)


# principals: subject -> role
EDITOR = ("editor-alice", "editor")
VIEWER = ("viewer-bob", "viewer")
ADMIN = ("admin-carol", "admin")

DRIFTS = ("server", "client", "issuer")
SCENARIOS = ("healthy", "token_expired", "token_expired_in_flight", "middleware_latency", "clock_drift",
             "grant_not_active", "policy_mismatch", "policy_version_skew", "token_invalid", "token_missing",
             "unexplained", "mixed")
# Scenarios beyond one per cause (not in SCENARIOS: the per-cause suites iterate that).
LOG_SCENARIOS = ("logs_only",)
# The faults logs_only injects: those the backend itself detects and logs (its jwt.decode, grant check, casbin).
LOGGED_CAUSES = ("token_expired", "token_missing", "token_invalid", "grant_not_active", "policy_mismatch")
LOGGING_REPLICA = "r5"
# Scenarios for `jitrace replay`: the candidate policy revision each one is made for.
REPLAY_SCENARIOS = ("policy_rollout",)


def policy_files(version: str) -> tuple[str, str]:
    """The casbin model and the policy file of a revision (``lab/policies/<version>.csv``)."""
    folder = resources.files("jitrace.lab") / "policies"
    return str(folder / "model.conf"), str(folder / f"{version}.csv")


def _task(principal: tuple[str, str], method: str, replica: str, **extra: Any) -> dict[str, Any]:
    task = {"subject": principal[0], "role": principal[1], "method": method, "replica": replica,
            "token_mode": "fresh", "lifetime_s": HEALTHY_LIFETIME_S}
    if method == "Watch":
        task.update(events=3, interval_s=0.1)
    task.update(extra)
    return task


def _healthy(rng: random.Random, replicas: list[Replica]) -> Call:
    """A call every policy revision allows, on any replica; sync or aio, unary or streaming."""
    replica = rng.choice(replicas)
    principal = rng.choice([EDITOR, VIEWER, ADMIN])
    method = rng.choice(["Read", "Read", "Watch"])
    if principal is ADMIN or (principal is EDITOR and replica.policy == "v2"):
        method = rng.choice(["Read", "Write", "Watch"])
    return Call(_task(principal, method, replica.name, aio=rng.random() < 0.4))


def _injected(cause: str, i: int, rng: random.Random, s: Scenario) -> list[Call]:
    """The calls of one injected fault: usually one call, a flow of two for the client's clock drift."""
    aio = i % 3 == 2
    if cause == "token_expired":  # a token fetched, kept past its expiry and sent anyway
        return [Call(_task(EDITOR, "Read", "r1", token_mode="stale", lifetime_s=1, hold_s=2.2, aio=aio), cause)]
    if cause == "token_expired_in_flight":  # a watch stream outliving its token: the check on a later event fails
        return [Call(_task(VIEWER, "Watch", "r1", lifetime_s=SHORT_S, events=12, interval_s=0.4, aio=aio), cause)]
    if cause == "middleware_latency":  # valid on arrival, held by slow middleware past expiry before the check
        return [Call(_task(EDITOR, "Read", "r1", lifetime_s=SHORT_S, slow_s=SHORT_S + 0.6, aio=aio), cause)]
    if cause == "clock_drift":
        drift = s.notes
        if drift == "client":  # the gateway's clock is behind: it thinks the token has time left, never refreshes
            principal = (f"batch-{i}", "editor")
            mode = {"token_mode": "refreshing", "lifetime_s": SHORT_S}
            return [Call(_task(principal, "Read", "r1", **mode)),
                    Call(_task(principal, "Read", "r1", **mode, aio=aio), cause, before_s=SHORT_S + 1.2)]
        replica = "r3" if drift == "server" else rng.choice(["r1", "r2"])
        return [Call(_task(EDITOR, "Read", replica, lifetime_s=SKEW_S // 2, aio=aio), cause)]
    if cause == "grant_not_active":  # not yet approved-effective, or already over
        window = {"grant_delay_s": 30, "grant_duration_s": 60} if i % 2 else {"grant_delay_s": -20,
                                                                               "grant_duration_s": 10}
        return [Call(_task(VIEWER, "Read", "r1", aio=aio, **window), cause)]
    if cause == "policy_mismatch":  # a viewer may not write under any revision
        return [Call(_task(VIEWER, "Write", "r1", aio=aio), cause)]
    if cause == "policy_version_skew":  # r2 still runs v1, where an editor may not write; r1 (v2) allows it
        return [Call(_task(EDITOR, "Write", "r1")), Call(_task(EDITOR, "Write", "r2", aio=aio), cause)]
    if cause == "token_invalid":
        flavor = "bad_signature" if i % 2 == 0 else "wrong_audience"
        return [Call(_task(ADMIN, "Read", "r1", flavor=flavor, aio=aio), cause)]
    if cause == "token_missing":
        return [Call(_task(ADMIN, "Read", "r1", token_mode="none", aio=aio), cause)]
    if cause == "unexplained":
        # A legacy replica, not instrumented and sending no ErrorInfo: only the client saw the denial, with no reason.
        # (Behind it a viewer lacks the write role, but nothing in the traces can tell: the honest answer is
        # "unexplained, instrument the server".)
        return [Call(_task(VIEWER, "Write", "r4", aio=aio), cause)]
    raise ValueError(f"unknown cause {cause!r}")


def _on_replica(flow: list[Call], replica: str) -> list[Call]:
    """The same calls sent to ``replica``."""
    return [Call({**c.task, "replica": replica}, c.cause, c.before_s) for c in flow]


def build(name: str, calls: int = 8, seed: int = 7, drift: str = "server") -> Scenario:
    """The scenario ``name`` with ``calls`` injected denials per cause and as many healthy calls per cause."""
    if name in LOG_SCENARIOS:
        return _build_logs_only(calls, seed)
    if name in REPLAY_SCENARIOS:
        return _build_policy_rollout(calls, seed)
    if name not in SCENARIOS:
        names = SCENARIOS + LOG_SCENARIOS + REPLAY_SCENARIOS
        raise ValueError(f"unknown scenario {name!r}; one of: {', '.join(names)}")
    if drift not in DRIFTS:
        raise ValueError(f"unknown clock drift {drift!r}; one of: {', '.join(DRIFTS)}")
    rng = random.Random(seed)
    replicas = [Replica("r1"), Replica("r2")]
    causes: list[str]
    s = Scenario(name, replicas)
    if name == "mixed":
        causes = [c for c in SCENARIOS if c not in ("healthy", "mixed")]
        drift = "server"
    elif name == "healthy":
        causes = []
    else:
        causes = [name]
    if "policy_version_skew" in causes:
        replicas[1] = Replica("r2", policy="v1")
    if "clock_drift" in causes:
        s.notes = drift
        if drift == "server":
            replicas.append(Replica("r3", skew_s=SKEW_S))
        elif drift == "client":
            s.gateway_skew_s = -SKEW_S
        else:
            s.issuer_skew_s = -SKEW_S
    if "unexplained" in causes:
        replicas.append(Replica("r4", instrumented=False))
    healthy_n = calls * max(1, len(causes))
    s.flows = [[_healthy(rng, replicas)] for _ in range(healthy_n)]
    for cause in causes:
        s.flows += [_injected(cause, i, rng, s) for i in range(calls)]
    rng.shuffle(s.flows)
    return s


def _build_logs_only(calls: int, seed: int) -> Scenario:
    """logs_only: every fault of LOGGED_CAUSES sent to the jitrace-less, logging replica r5, among healthy calls."""
    rng = random.Random(seed)
    replicas = [Replica("r1"), Replica("r2"), Replica(LOGGING_REPLICA, jitrace=False)]
    s = Scenario("logs_only", replicas, notes="faults on r5: traced by OpenTelemetry, not by jitrace; logs denials")
    s.flows = [[_healthy(rng, replicas)] for _ in range(calls * len(LOGGED_CAUSES))]
    for cause in LOGGED_CAUSES:
        s.flows += [_on_replica(_injected(cause, i, rng, s), LOGGING_REPLICA) for i in range(calls)]
    rng.shuffle(s.flows)
    return s


# The faults policy_rollout injects; the editors' writes are the calls the candidate v2 would decide otherwise.
ROLLOUT_FAULTS = ("editor_write", "viewer_write", "grant_not_active")


def _build_policy_rollout(calls: int, seed: int) -> Scenario:
    """policy_rollout: every replica still runs v1 while v2 (editors may write) is the candidate. ``calls`` of each
    of ROLLOUT_FAULTS among as many healthy calls per fault (reads and watches of every role, admins' writes)."""
    rng = random.Random(seed)
    replicas = [Replica("r1", policy="v1"), Replica("r2", policy="v1")]
    s = Scenario("policy_rollout", replicas, candidate="v2",
                 notes="decisions recorded under v1; v2 is the candidate (jitrace replay)")
    s.flows = [[_healthy(rng, replicas)] for _ in range(calls * len(ROLLOUT_FAULTS))]
    for i in range(calls):
        replica = rng.choice(replicas).name
        aio = i % 3 == 2
        s.flows.append([Call(_task(EDITOR, "Write", replica, aio=aio), "policy_mismatch")])  # v2 would allow it
        s.flows.append([Call(_task(VIEWER, "Write", replica, aio=aio), "policy_mismatch")])  # v2 denies it too
        s.flows.append(_injected("grant_not_active", i, rng, s))  # denied before pycasbin: no request recorded
    rng.shuffle(s.flows)
    return s
