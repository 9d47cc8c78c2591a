"""Logs beside the spans: records joined to denials (by ids, else by service and time), shown as bounded evidence
lines, and the documented log patterns deciding the denials no span rule explains, at a lower confidence."""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from spanfactory import T0, Token, World

from jitrace.analyzer.analyze import analyze
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.steps import session


def _uninstrumented_denial(world: World, at: float = T0 + 10) -> dict:
    """A denial only OpenTelemetry traced: no jit.* facts, no ErrorInfo reason on either side."""
    tok = Token(iat=T0, exp=T0 + 3600)
    return world.call(at, tok, required="orders.write", server_instrumented=False, client_instrumented=False,
                      reason=False)


def _add_log(con, body: str, *, trace_id=None, span_id=None, at_s: float = T0 + 10, service="orders",
             severity: int = 13) -> None:
    ns = round(at_s * 1e9)
    con.execute("INSERT INTO logs (time_ns, observed_ns, trace_id, span_id, severity_number, body, service) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", [ns, ns, trace_id, span_id, severity, body, service])


def _attribution(con) -> dict:
    cause, rule, confidence, evidence = con.execute(
        "SELECT cause, rule, confidence, evidence FROM attributions").fetchone()
    return {"cause": cause, "rule": rule, "confidence": confidence, **json.loads(evidence)}


# Messages of the lab and of common libraries -> (cause, pattern name)
MESSAGES = [
    ("Signature has expired", "token_expired", "jwt_expired"),  # PyJWT ExpiredSignatureError
    ("replica r5 denied Read: TOKEN_EXPIRED (token expired)", "token_expired", "jwt_expired"),
    ("The token is not yet valid (iat)", "clock_drift", "jwt_not_yet_valid"),  # PyJWT ImmatureSignatureError
    ("Signature verification failed", "token_invalid", "jwt_bad_signature"),  # PyJWT InvalidSignatureError
    ("Invalid audience", "token_invalid", "jwt_bad_audience"),  # PyJWT InvalidAudienceError
    ("Not enough segments", "token_invalid", "jwt_malformed"),  # PyJWT DecodeError
    ("rejected call: missing credentials", "token_missing", "token_missing"),
    ("no token on the request", "token_missing", "token_missing"),
    ("grant g-17 not active at 12:00:03", "grant_not_active", "grant_not_active"),
    ("JIT grant g-17 for alice ended at 11:59:00", "grant_not_active", "grant_not_active"),
    ("role support lacks orders.refund", "policy_mismatch", "permission_lacks"),
    ("alice is not permitted to call Refund", "policy_mismatch", "permission_lacks"),
    ("casbin enforce(alice, orders, write) -> false", "policy_mismatch", "casbin_deny"),
    ("OPA decision data/authz/allow: deny", "policy_mismatch", "opa_deny"),
    ("policy revision v1 on this node is stale (latest v2)", "policy_version_skew", "policy_version"),
]


@pytest.mark.parametrize("message, cause, pattern", MESSAGES, ids=[m[2] + ":" + m[0][:24] for m in MESSAGES])
def test_a_log_line_decides_a_denial_the_spans_cannot_explain(message, cause, pattern):
    world = World()
    call = _uninstrumented_denial(world)
    con = session.connect()
    world.load(con)
    _add_log(con, "handling Write", trace_id=call["trace_id"], span_id=call["server"]["span_id"], severity=9)
    _add_log(con, message, trace_id=call["trace_id"], span_id=call["server"]["span_id"])
    session.run_queries(con)
    a = _attribution(con)
    assert a["cause"] == cause and a["rule"] == f"log_pattern:{pattern}"
    assert 0 < a["confidence"] <= 0.6  # weaker than any span rule deciding the same cause
    assert a["log_line"].endswith(f" orders WARN {message}") and a["log_pattern"] == pattern
    assert a["log_count"] == 2 and len(a["logs"]) == 2


def test_without_a_matching_line_the_denial_stays_unexplained_with_its_lines_shown():
    world = World()
    call = _uninstrumented_denial(world)
    con = session.connect()
    world.load(con)
    _add_log(con, "request finished in 3 ms", trace_id=call["trace_id"], span_id=call["server"]["span_id"])
    session.run_queries(con)
    a = _attribution(con)
    assert a["cause"] == "unexplained" and a["logs"][0].endswith("request finished in 3 ms")
    assert "log_pattern" not in a


def test_span_facts_outrank_a_contradicting_log_line():
    world, tok = World(), Token(iat=T0, exp=T0 + 3600)
    call = world.call(T0 + 10, tok, required="orders.write")  # instrumented: the policy denied
    con = session.connect()
    world.load(con)
    _add_log(con, "Signature has expired", trace_id=call["trace_id"], span_id=call["server"]["span_id"])
    session.run_queries(con)
    a = _attribution(con)
    assert a["cause"] == "policy_mismatch" and a["confidence"] > 0.6 and not a["rule"].startswith("log_pattern")
    assert a["logs"][0].endswith("Signature has expired")


@pytest.mark.parametrize("offset_s, window_s, joined", [(0.5, None, True), (-1.9, None, True), (5.0, None, False),
                                                         (5.0, 10.0, True), (0.5, 0.1, False)])
def test_a_record_without_ids_joins_by_service_and_time_window(offset_s, window_s, joined):
    world = World()
    call = _uninstrumented_denial(world)
    start_s = call["server"]["start_ns"] / 1e9
    con = session.connect()
    world.load(con)
    _add_log(con, "token expired for alice", at_s=start_s + offset_s)  # no trace context (a plain text logger)
    _add_log(con, "token expired for bob", at_s=start_s, service="billing")  # another service: never joined
    session.run_queries(con, settings={"jitrace_log_window_s": window_s} if window_s else None)
    a = _attribution(con)
    if joined:
        assert a["cause"] == "token_expired" and a["logs"] == [a["log_line"]] and "alice" in a["log_line"]
        assert a["confidence"] == pytest.approx(0.6 * 0.8 * 0.8**len(a["missing"]), abs=0.001)  # time-joined: weaker
    else:
        assert a["cause"] == "unexplained" and "logs" not in a


def test_a_record_with_another_trace_id_is_not_joined_by_time():
    world = World()
    call = _uninstrumented_denial(world)
    con = session.connect()
    world.load(con)
    _add_log(con, "token expired", trace_id="ab" * 16, at_s=call["server"]["start_ns"] / 1e9)
    session.run_queries(con)
    assert _attribution(con)["cause"] == "unexplained"


def test_evidence_lines_are_bounded_and_cut():
    world = World()
    call = _uninstrumented_denial(world)
    con = session.connect()
    world.load(con)
    for i in range(20):
        _add_log(con, f"line {i:02d} " + "x" * 500, trace_id=call["trace_id"], at_s=T0 + 10 + i / 1000)
    session.run_queries(con)
    a = _attribution(con)
    assert a["log_count"] == 20 and len(a["logs"]) == 5
    assert [line.split(" ")[4] for line in a["logs"]] == ["00", "01", "02", "03", "04"]
    assert all(line.endswith("…") and len(line.split(" WARN ", 1)[1]) == 200 for line in a["logs"])


def _analyze_one_call(tmp_path: Path, log_lines: list[dict], **kwargs) -> tuple[dict, Path, dict]:
    world = World()
    call = _uninstrumented_denial(world)
    inp = tmp_path / "input"
    inp.mkdir(exist_ok=True)
    world.write_parquet(inp / "spans.parquet")
    with open(inp / "app.jsonl", "w") as f:
        for line in log_lines:
            if isinstance(line, str):
                f.write(line + "\n")
            else:
                f.write(json.dumps({"otelTraceID": call["trace_id"], "otelSpanID": call["server"]["span_id"],
                                    "otelServiceName": "orders", "levelname": "WARNING",
                                    "timestamp": call["server"]["start_ns"] / 1e9, **line}) + "\n")
    summary = analyze([str(inp)], tmp_path / "out", quiet=True, **kwargs)
    return summary, tmp_path / "out", call


def test_user_pattern_files_come_first_and_can_replace_a_builtin_pattern(tmp_path):
    patterns = tmp_path / "mine.csv"
    patterns.write_text("name,pattern,cause,confidence,description\n"
                        "acl_no,ACL says no,policy_mismatch,0.55,our gateway's ACL\n"
                        'jwt_expired,"never matches \\d{40}",token_expired,0.6,switch the built-in one off\n')
    summary, out, _ = _analyze_one_call(tmp_path, [{"message": "ACL says no to alice"},
                                                   {"message": "Signature has expired"}],
                                        log_patterns=[str(patterns)])
    con = duckdb.connect(str(out / "jitrace.duckdb"), read_only=True)
    cause, rule = con.execute("SELECT cause, rule FROM attributions").fetchone()
    assert (cause, rule) == ("policy_mismatch", "log_pattern:acl_no") and summary["causes"]["policy_mismatch"] == 1


@pytest.mark.parametrize("text, says", [
    ("name,pattern,cause,confidence\nx,(unclosed,token_expired,0.5\n", "mine.csv:2: pattern '(unclosed'"),
    ("name,pattern,cause,confidence\nx,boom,bad_luck,0.5\n", "mine.csv:2: cause 'bad_luck'"),
    ("name,pattern,cause,confidence\nx,boom,token_expired,high\n", "mine.csv:2: confidence 'high'"),
    ("name,pattern,cause,confidence\nx,boom,token_expired,1.5\n", "mine.csv:2: confidence 1.5"),
    ("name,regex,cause,confidence\nx,boom,token_expired,0.5\n", "lacks the column 'pattern'"),
])
def test_a_bad_pattern_file_is_a_one_line_error_naming_file_and_line(tmp_path, text, says):
    patterns = tmp_path / "mine.csv"
    patterns.write_text(text)
    with pytest.raises(UserError) as err:
        analyze([str(tmp_path)], tmp_path / "out", quiet=True, log_patterns=[str(patterns)])
    assert says in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out" / "attributions.csv").exists()  # refused before any work


def test_bad_log_lines_are_counted_and_reported_like_bad_spans(tmp_path):
    summary, _, _ = _analyze_one_call(tmp_path, [{"message": "Signature has expired"}, "{not json",
                                                 {"message": "x", "otelTraceID": "not-hex"}])
    assert summary["bad_records"] == 2 and summary["exit_code"] == 4
    assert len(summary["problems"]) == 2 and all("app.jsonl" in p and "\n" not in p for p in summary["problems"])
    assert summary["causes"]["token_expired"] == 1  # the good line still decided


def test_no_token_reaches_any_output_through_logs(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    token = jwt.encode({"sub": "alice", "aud": "inventory", "iat": now, "exp": now + 60}, key, algorithm="ES256")
    lines = [{"message": f"rejected Authorization: Bearer {token} (Signature has expired)"},
             {"message": f"token was {token}", "headers": {"authorization": f"Bearer {token}"}}]
    summary, out, _ = _analyze_one_call(tmp_path, lines)
    assert summary["logs"] == 2 and summary["causes"]["token_expired"] == 1
    secret = token.split(".")[2]  # the signature: what would let anyone replay the token
    for name in ("attributions.csv", "report.html", "summary.json"):
        text = (out / name).read_text()
        assert token not in text and secret not in text, name
    con = duckdb.connect(str(out / "jitrace.duckdb"), read_only=True)
    for table in ("logs", "attributions", "denial_logs"):
        dump = json.dumps(con.execute(f"SELECT * FROM {table}").fetchall(), default=str)
        assert secret not in dump and "eyJ" not in dump, table
    evidence = json.loads(con.execute("SELECT evidence FROM attributions").fetchone()[0])
    assert "[REDACTED]" in evidence["log_line"]
    parquet = con.execute(f"SELECT evidence FROM read_parquet('{out / 'attributions.parquet'}')").fetchall()
    assert secret not in str(parquet)


def test_on_a_busy_service_the_nearest_lines_before_and_after_the_call_join_by_time():
    world = World()
    call = _uninstrumented_denial(world)
    start_s = call["server"]["start_ns"] / 1e9
    con = session.connect()
    world.load(con)
    for dt in (-1.5, -0.7, -0.2, 0.05, 0.4, 1.2):  # other calls' lines in the same window, no ids on any
        _add_log(con, f"token expired for call at {dt:+.2f}", at_s=start_s + dt)
    session.run_queries(con)
    a = _attribution(con)
    assert a["log_count"] == 2 and [line.rsplit(" ", 1)[1] for line in a["logs"]] == ["-0.20", "+0.05"]


def test_an_opa_decision_log_with_result_false_decides_through_the_loader(tmp_path):
    world = World()
    call = _uninstrumented_denial(world)
    inp = tmp_path / "input"
    inp.mkdir()
    world.write_parquet(inp / "spans.parquet")
    decision = {"decision_id": "d-1", "path": "authz/allow", "result": False, "bundles": {"authz": {"revision": "7"}},
                "trace_id": call["trace_id"], "span_id": "0123456789abcdef",  # OPA's own span in the call's trace
                "timestamp": "2026-01-01T00:00:00Z", "input": {"headers": {"authorization": "Bearer abc.def.ghi"}}}
    (inp / "decisions.jsonl").write_text(json.dumps(decision) + "\n")
    summary = analyze([str(inp)], tmp_path / "out", quiet=True)
    con = duckdb.connect(str(tmp_path / "out" / "jitrace.duckdb"), read_only=True)
    cause, rule, evidence = con.execute("SELECT cause, rule, evidence FROM attributions").fetchone()
    assert (cause, rule) == ("policy_mismatch", "log_pattern:opa_deny") and summary["logs"] == 1
    assert json.loads(evidence)["log_line"].endswith("opa INFO OPA decision authz/allow: deny")


def test_a_line_on_another_grpc_call_of_the_trace_is_that_calls():
    world = World()
    call = _uninstrumented_denial(world)
    other = world.call(T0 + 20, Token(iat=T0, exp=T0 + 3600))  # an allowed call, moved into the same trace below
    con = session.connect()
    world.load(con)
    con.execute("UPDATE span_rows SET trace_id = ? WHERE trace_id = ?", [call["trace_id"], other["trace_id"]])
    _add_log(con, "token expired", trace_id=call["trace_id"], span_id=other["server"]["span_id"])
    session.run_queries(con)
    assert _attribution(con)["cause"] == "unexplained"
    con.execute("UPDATE logs SET span_id = ?", [call["client"]["span_id"]])  # on the denied call's own client span
    session.run_queries(con)
    assert _attribution(con)["cause"] == "token_expired"
