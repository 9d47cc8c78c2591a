"""`jitrace replay`: recorded decisions evaluated again under a candidate, the flips exactly those whose outcome it
changes, in every input format; distinct requests evaluated once; what cannot be replayed counted and named; the
--fail-on-flip gate's exit codes; outputs published safely; one-line errors for a bad candidate."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from decisions import FORMATS, Decision, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitrace.analyzer import cli, errors, outputs
from jitrace.analyzer import replay as replay_module
from jitrace.analyzer.load import load_into
from jitrace.analyzer.replay import CasbinCandidate, replay
from jitrace.analyzer.steps.session import connect

POLICIES = Path(__file__).resolve().parents[2] / "lab" / "policies"
MODEL, V1, V2 = (str(POLICIES / name) for name in ("model.conf", "v1.csv", "v2.csv"))
ROLES = ("viewer", "editor", "admin")
V1_ALLOWS = {("viewer", "read"), ("editor", "read"), ("admin", "read"), ("admin", "write")}
V2_ALLOWS = V1_ALLOWS | {("editor", "write")}


def _recorded(n: int, subject: str, role: str, act: str, **extra) -> Decision:
    """A decision as the lab's v1 replicas record it (pycasbin, the subject bound to its role)."""
    allowed = (role, act) in V1_ALLOWS
    return Decision(n, "allow" if allowed else "deny", (subject, "inventory", act), (role,),
                    rule=f"p, {role}, inventory, {act}" if allowed else None,
                    method="Write" if act == "write" else "Read", **extra)


@pytest.fixture
def monkeypatch_module():
    """A MonkeyPatch a hypothesis example undoes itself (the function-scoped fixture lives across examples)."""
    patcher = pytest.MonkeyPatch()
    yield patcher
    patcher.undo()


calls = st.lists(st.tuples(st.sampled_from(["alice", "bob", "carol", "dave"]), st.sampled_from(ROLES),
                           st.sampled_from(["read", "write"])), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(made=calls, fmt=st.sampled_from(FORMATS))
def test_under_v2_the_flips_are_exactly_the_editors_writes(tmp_path_factory, made, fmt):
    recorded = [_recorded(n, s, r, a) for n, (s, r, a) in enumerate(made)]
    path = write(recorded, tmp_path_factory.mktemp("replay") / f"spans.{fmt}", fmt)
    candidate = CasbinCandidate(MODEL, V2)
    seen: Counter = Counter()

    def counted(request, granted):
        seen[(request, granted)] += 1
        return candidate(request, granted)

    result = replay([str(path)], counted, engine="casbin")
    flips = result.flips()
    expected = {d.trace_id for d in recorded if (d.granted[0], d.request[2]) in V2_ALLOWS - V1_ALLOWS}
    assert set(flips["trace_id"]) == expected and len(flips) == len(expected)
    assert set(flips["flip"]) <= {"deny_to_allow"} and set(flips["rule"]) <= {"p, editor, inventory, write"}
    # each distinct (request, roles) evaluated once, however many calls made it
    assert set(seen.values()) == {1} and len(seen) == len({(d.request, d.granted) for d in recorded})
    assert result.summary["replayed"] == len(recorded) and result.summary["distinct_requests"] == len(seen)
    by_principal = {r["value"]: r["deny_to_allow"] for r in result.summary["by"]["principal"]}
    assert by_principal == dict(Counter(d.request[0] for d in recorded if d.trace_id in expected))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(made=calls)
def test_under_the_recording_policy_nothing_flips(tmp_path_factory, made):
    recorded = [_recorded(n, s, r, a) for n, (s, r, a) in enumerate(made)]
    path = write(recorded, tmp_path_factory.mktemp("replay") / "spans.jsonl", "otlp_json")
    result = replay([str(path)], CasbinCandidate(MODEL, V1))
    assert result.summary["flips"] == {"allow_to_deny": 0, "deny_to_allow": 0}
    assert result.summary["replayed"] == len(recorded)


def test_a_removed_rule_flips_allow_to_deny_and_names_the_rule_that_allowed(tmp_path):
    v3 = tmp_path / "v3.csv"
    v3.write_text("".join(line + "\n" for line in Path(V1).read_text().splitlines() if "viewer" not in line))
    recorded = [_recorded(0, "bob", "viewer", "read"), _recorded(1, "carol", "admin", "read"),
                _recorded(2, "bob", "viewer", "read")]
    result = replay([str(write(recorded, tmp_path / "s.jsonl", "otlp_json"))], CasbinCandidate(MODEL, str(v3)))
    flips = result.flips()
    assert list(flips["trace_id"]) == [recorded[0].trace_id, recorded[2].trace_id]
    assert set(flips["flip"]) == {"allow_to_deny"} and set(flips["rule"]) == {"p, viewer, inventory, read"}
    assert flips["candidate_rule"].isna().all()
    assert result.summary["by"]["rule"] == [{"value": "p, viewer, inventory, read", "allow_to_deny": 2,
                                             "deny_to_allow": 0, "examples": list(flips["trace_id"])}]
    assert result.summary["by"]["policy_version"][0]["value"] == "inventory v1"


def test_the_roles_held_then_decide_not_the_candidates_own(tmp_path):
    # the same request of one subject, recorded with two different role sets: each judged with its own roles
    recorded = [_recorded(0, "alice", "viewer", "write"), _recorded(1, "alice", "editor", "write"),
                _recorded(2, "alice", "viewer", "write")]
    policy = Path(V2).read_bytes()
    candidate = CasbinCandidate(MODEL, V2)
    result = replay([str(write(recorded, tmp_path / "s.jsonl", "otlp_json"))], candidate)
    assert list(result.flips()["trace_id"]) == [recorded[1].trace_id]
    assert result.summary["distinct_requests"] == 2
    # the bindings are the replay's own: one subject's roles at a time, and the policy file is never written
    assert candidate.binds_roles and candidate.enforcer.get_roles_for_user("alice") in (["viewer"], ["editor"])
    assert Path(V2).read_bytes() == policy


def test_roles_in_another_order_are_the_same_roles_evaluated_once(tmp_path):
    recorded = [Decision(n, "deny", ("alice", "inventory", "write"), roles) for n, roles in
                enumerate([("viewer", "editor"), ("editor", "viewer"), ("editor", "viewer", "editor")])]
    asked = []
    result = replay([str(write(recorded, tmp_path / "s.jsonl", "otlp_json"))],
                    lambda request, granted: asked.append(granted) or "editor" in granted)
    assert asked == [("editor", "viewer")] and result.summary["flips"]["deny_to_allow"] == 3


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(made=calls)
def test_a_hash_collision_joins_by_the_lists_themselves(tmp_path_factory, made, monkeypatch_module):
    # every request of three values hashes alike: joined by the hash alone, decisions would take others' answers
    recorded = [_recorded(n, s, r, a) for n, (s, r, a) in enumerate(made)]
    path = str(write(recorded, tmp_path_factory.mktemp("replay") / "s.jsonl", "otlp_json"))
    honest = replay([path], CasbinCandidate(MODEL, V2)).flips()
    joins = []
    flips = replay_module._flips

    def recorded_join(con, by_hash):
        joins.append(by_hash)
        flips(con, by_hash)

    monkeypatch_module.setattr(replay_module, "PAIR_HASH", "hash(len({t}request))")
    monkeypatch_module.setattr(replay_module, "_flips", recorded_join)
    try:
        colliding = replay([path], CasbinCandidate(MODEL, V2))
    finally:
        monkeypatch_module.undo()
    assert colliding.flips().equals(honest)
    distinct = len({(d.request, d.granted) for d in recorded})
    assert colliding.summary["distinct_requests"] == distinct
    assert joins == [distinct == 1]  # by the lists wherever two distinct requests share the hash


def test_decisions_that_cannot_be_replayed_are_counted_and_named(tmp_path):
    recorded = [
        _recorded(0, "alice", "editor", "write"),
        Decision(1, "deny", None, ("viewer",), engine="jit-grant", policy_id="grant-window", method="Read"),
        Decision(2, "deny", None, ("editor",), method="Write"),  # a casbin decision recorded without its request
        Decision(3, "allow", ("[REDACTED]", "inventory", "read"), ("viewer",)),
        Decision(4, "allow", ("bob", "inventory", "read"), ("viewer",), engine="opa"),
        Decision(5, "allow", ("bob", "inventory", "read"), ("viewer",), policy_id="orders"),
        Decision(6, "maybe", ("bob", "inventory", "read"), ("viewer",)),
        Decision(7, "deny", ("bob", "inventory"), ("viewer",)),  # two values: the model takes three
    ]
    path = write(recorded, tmp_path / "s.jsonl", "otlp_json")
    result = replay([str(path)], CasbinCandidate(MODEL, V2), engine="casbin", policy_id="inventory")
    s = result.summary
    assert s["decisions"] == 8 and s["replayed"] == 1 and s["flips"]["deny_to_allow"] == 1
    assert s["not_replayed"] == {"unknown_decision": 1, "no_request": 2, "other_engine": 1, "other_policy": 1,
                                 "request_redacted": 1, "evaluation_failed": 1}
    named = {(r["reason"], r["engine"], r["method"], r["example"]) for r in s["not_replayed_by"]}
    assert ("no_request", "jit-grant", "jitlab.Inventory/Read", recorded[1].trace_id) in named
    assert ("no_request", "casbin", "jitlab.Inventory/Write", recorded[2].trace_id) in named
    failed = next(r for r in s["not_replayed_by"] if r["reason"] == "evaluation_failed")
    assert failed["example"] == recorded[7].trace_id and "invalid request size" in failed["detail"]
    unknown = next(r for r in s["not_replayed_by"] if r["reason"] == "unknown_decision")
    assert unknown["detail"] == "decision maybe"


def test_any_callable_plugs_in_and_a_bad_answer_is_an_evaluation_failure(tmp_path):
    recorded = [_recorded(n, f"user{n % 3}", ROLES[n % 3], "write") for n in range(9)]
    path = write(recorded, tmp_path / "s.jsonl", "otlp_json")

    def opa_like(request, granted):  # an engine of another kind: a plain function of the request and the roles
        if request[0] == "user2":
            return "yes"  # not a decision
        return "editor" in granted or "admin" in granted

    result = replay([str(path)], opa_like, engine=None)
    s = result.summary
    assert s["flips"]["deny_to_allow"] == 3 and s["not_replayed"]["evaluation_failed"] == 3
    assert set(result.flips()["principal"]) == {"user1"}
    assert result.flips()["rule"].isna().all()  # this engine names no rule


def test_a_connection_holding_spans_is_replayed_in_place(tmp_path):
    recorded = [_recorded(n, "alice", "editor", "write") for n in range(4)]
    con = connect()
    load_into(con, [str(write(recorded, tmp_path / "s.jsonl", "otlp_json"))])
    result = replay(con, CasbinCandidate(MODEL, V2))
    assert result.con is con and result.summary["flips"]["deny_to_allow"] == 4
    assert con.execute("SELECT count(*) FROM replay_flips").fetchone() == (4,)


# --- the command ------------------------------------------------------------------------------------------------------
@pytest.fixture
def spans(tmp_path) -> Path:
    recorded = [_recorded(0, "alice", "editor", "write"), _recorded(1, "bob", "viewer", "read"),
                _recorded(2, "=cmd|' /C calc'!A0", "editor", "write"),  # a formula, for a spreadsheet
                _recorded(3, "\x1b]0;pwned\x07<b>eve", "editor", "write"),  # a terminal escape, markup
                Decision(4, "deny", None, ("viewer",), engine="jit-grant", policy_id="grant-window")]
    return write(recorded, tmp_path / "spans.jsonl", "otlp_json")


@pytest.mark.parametrize(("policy", "gate", "code"), [
    (V2, "deny-to-allow", errors.FAIL_ON), (V2, "any", errors.FAIL_ON), (V2, "allow-to-deny", errors.OK),
    (V2, None, errors.OK), (V1, "any", errors.OK)])
def test_fail_on_flip_exit_codes(spans, tmp_path, capsys, policy, gate, code):
    args = ["replay", str(spans), "--casbin", MODEL, policy, "--quiet", *(["--fail-on-flip", gate] if gate else [])]
    assert cli.main(args) == code


def test_outputs_terminal_and_report(spans, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["replay", str(spans), "--casbin", MODEL, V2, "--out", str(out), "--fail-on-flip", "any"]) == 3
    printed = capsys.readouterr()
    assert "\x1b" not in printed.out and "\\x1b]0;pwned\\x07<b>eve" in printed.out
    assert "0 allow -> deny, 3 deny -> allow" in printed.out and "no_request" in printed.out
    assert "--fail-on-flip any: 0 allow_to_deny, 3 deny_to_allow" in printed.err
    assert sorted(p.name for p in out.iterdir()) == sorted(outputs.REPLAY_OUTPUTS)
    parquet = pd.read_parquet(out / "flips.parquet")
    csv = pd.read_csv(out / "flips.csv", dtype=str)
    assert list(parquet["trace_id"]) == list(csv["trace_id"]) == [f"{n + 1:032x}" for n in (0, 2, 3)]
    assert "=cmd|' /C calc'!A0" in set(parquet["principal"]) and "'=cmd|' /C calc'!A0" in set(csv["principal"])
    assert json.loads(parquet["request"][0]) == ["alice", "inventory", "write"]
    summary = json.loads((out / "replay.json").read_text())
    assert summary["exit_code"] == 3 and summary["flips"] == {"allow_to_deny": 0, "deny_to_allow": 3}
    assert summary["candidate"]["policy"] == V2 and summary["not_replayed"]["no_request"] == 1
    page = (out / "report.html").read_text()
    assert 'id="replay"' in page and "Flips by principal" in page and "grant-window" in page
    assert "<b>eve" not in page and "&lt;b&gt;eve" in page
    # a second run replaces its own files; the manifest says whose they are
    assert cli.main(["replay", str(spans), "--casbin", MODEL, V1, "--out", str(out), "--quiet"]) == 0
    assert len(pd.read_parquet(out / "flips.parquet")) == 0
    assert json.loads((out / outputs.MANIFEST).read_text())["written_by"] == "jitrace replay"


def test_an_output_folder_is_never_anothers(spans, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my own page")
    assert cli.main(["replay", str(spans), "--casbin", MODEL, V2, "--out", str(mine), "--quiet"]) == errors.USAGE
    assert "holds report.html, which jitrace did not write" in capsys.readouterr().err
    assert (mine / "report.html").read_text() == "my own page"
    analyzed = tmp_path / "analyzed"
    assert cli.main(["analyze", str(spans), "--out", str(analyzed), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in analyzed.iterdir()}
    assert cli.main(["replay", str(spans), "--casbin", MODEL, V2, "--out", str(analyzed), "--quiet"]) == errors.USAGE
    assert "holds the output of jitrace analyze" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in analyzed.iterdir()} == before
    # and the other way round; a replay output inside an input folder is not read back as spans
    replayed = tmp_path / "replayed"
    assert cli.main(["replay", str(spans), "--casbin", MODEL, V2, "--out", str(replayed), "--quiet"]) == 0
    assert cli.main(["analyze", str(spans), "--out", str(replayed), "--quiet"]) == errors.USAGE
    (replayed / "more").mkdir()
    write([_recorded(9, "zed", "editor", "write")], replayed / "more" / "s.jsonl", "otlp_json")
    assert cli.main(["replay", str(replayed), "--casbin", MODEL, V2, "--quiet", "--out", str(tmp_path / "x")]) == 0
    assert json.loads((tmp_path / "x" / "replay.json").read_text())["decisions"] == 1


def _error(capsys, args: list[str]) -> str:
    assert cli.main(args) == errors.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_a_bad_candidate_is_one_line_naming_the_file(spans, tmp_path, capsys):
    bad_model = tmp_path / "bad.conf"
    bad_model.write_text("garbage\n")
    partial = tmp_path / "partial.conf"
    partial.write_text("[request_definition]\nr = sub, obj, act\n")
    short_rule = tmp_path / "short.csv"
    short_rule.write_text("p, viewer, inventory, read\np, editor, inventory\n")
    alien = tmp_path / "alien.csv"
    alien.write_text("p, viewer, inventory, read\nq, x, y, z\n")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"p, \xff\xfe, inventory, read\n")
    for args, expected in [
        ([MODEL, str(tmp_path / "missing.csv")], "--casbin POLICY"),
        ([str(bad_model), V2], f"{bad_model}: not a casbin model"),
        ([str(partial), V2], f"{partial}: not a casbin model (no [policy_definition] section)"),
        ([MODEL, str(short_rule)], f"{short_rule}:2: a p rule of 2 values; the model's p takes 3"),
        ([MODEL, str(alien)], f"{alien}:2: 'q' is not a policy type of the model (g, p)"),
        ([MODEL, str(binary)], f"{binary}: cannot read the policy"),
    ]:
        assert expected in _error(capsys, ["replay", str(spans), "--casbin", *args, "--quiet"])


def test_nothing_to_replay_is_an_error_unless_allowed(tmp_path, capsys):
    path = write([Decision(0, "deny", None, ("viewer",))], tmp_path / "s.jsonl", "otlp_json")
    err = _error(capsys, ["replay", str(path), "--casbin", MODEL, V2, "--quiet"])
    assert "no decision to replay" in err and "1 no_request" in err
    assert cli.main(["replay", str(path), "--casbin", MODEL, V2, "--quiet", "--allow-empty"]) == errors.OK
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "no spans" in _error(capsys, ["replay", str(empty), "--casbin", MODEL, V2, "--quiet"])


def test_evaluation_failures_exit_4_with_every_output(tmp_path, capsys):
    path = write([_recorded(0, "alice", "editor", "write"), Decision(1, "deny", ("bob", "inventory"), ("viewer",))],
                 tmp_path / "s.jsonl", "otlp_json")
    out = tmp_path / "out"
    assert cli.main(["replay", str(path), "--casbin", MODEL, V2, "--out", str(out), "--quiet"]) == errors.BAD_RECORDS
    assert json.loads((out / "replay.json").read_text())["not_replayed"]["evaluation_failed"] == 1


@pytest.mark.parametrize("library", ["casbin", "duckdb"])
def test_without_its_libraries_the_command_names_the_extra(spans, capsys, monkeypatch, library):
    monkeypatch.setitem(sys.modules, library, None)  # importing it now fails as on an install without it
    monkeypatch.delitem(sys.modules, "jitrace.analyzer.replay")  # imported again, as by a first run
    err = _error(capsys, ["replay", str(spans), "--casbin", MODEL, V2])
    assert f"needs {library}, which is not installed: pip install 'jitrace[lab]'" in err
