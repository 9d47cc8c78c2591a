"""Policy decisions on the server span: the public API, and pycasbin's enforcer recorded without code changes."""

from __future__ import annotations

import time
from concurrent import futures
from pathlib import Path
from typing import Any

import casbin
import grpc
import jwt
import pytest
from casbin.core_enforcer import CoreEnforcer
from helpers import raw_channel, server_call, server_span
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace

from jitrace import lab
from jitrace.analyzer.redact import redact
from jitrace.instrumentation import _call_state, _policy, _server, _server_call, _settings, _token
from jitrace.instrumentation import contract as c
from jitrace.instrumentation._policy import record_policy_decision
from jitrace.instrumentation._safety import failure_counts
from jitrace.instrumentation._settings import Settings

# the lab's role-based model (a JIT grant binds a subject to a role)
MODEL = (Path(lab.__file__).parent / "policies" / "model.conf").read_text()
POLICY = """p, viewer, orders, read
p, editor, orders, read
p, editor, orders, write
g, alice, viewer
g, bob, editor
g, editor, viewer
"""


# --- the API --------------------------------------------------------------------------------------------------------
def test_a_decision_with_everything(exporter: Any) -> None:
    now = time.time()
    with server_call(exporter) as finished:
        record_policy_decision(False, engine="opa", policy_id="orders", version=7, rule="data.orders.allow",
                               required="orders:write", granted=("orders:read", "profile:read"), grant_id="g-7",
                               grant_start=now - 10, grant_end=now + 10, eval_s=0.004)
    span = finished[0]
    a = span.attributes
    assert a[c.POLICY_DECISION] == c.DECISION_DENY
    assert (a[c.POLICY_ENGINE], a[c.POLICY_ID], a[c.POLICY_VERSION], a[c.POLICY_RULE]) == (
        "opa", "orders", "7", "data.orders.allow")
    assert a[c.POLICY_REQUIRED] == "orders:write" and list(a[c.POLICY_GRANTED]) == ["orders:read", "profile:read"]
    assert a[c.POLICY_EVAL_S] == 0.004
    assert (a[c.GRANT_ID], a[c.GRANT_START], a[c.GRANT_END]) == ("g-7", now - 10, now + 10)
    # the check started eval_s before the decision was recorded: wait_s is at most the span's length minus that
    assert 0 <= a[c.AUTH_WAIT_S] <= (span.end_time - span.start_time) / 1e9


@pytest.mark.parametrize("sequence, expected", [
    (["allow", "allow"], "allow"),
    (["allow", "deny", "allow"], "deny"),  # the deny decided the call
    (["deny", "allow"], "deny"),
])
def test_which_decision_stays(exporter: Any, sequence: list[str], expected: str) -> None:
    with server_call(exporter) as finished:
        for n, decision in enumerate(sequence):
            record_policy_decision(decision, rule=f"rule-{n}")
    a = finished[0].attributes
    assert a[c.POLICY_DECISION] == expected
    assert a[c.POLICY_RULE] == f"rule-{sequence.index(expected)}"


def test_without_a_server_call_it_uses_the_current_span(exporter: Any) -> None:
    with trace.get_tracer("test").start_as_current_span("handler"):
        record_policy_decision(True, engine="custom")
    (span,) = exporter.get_finished_spans()
    assert span.attributes[c.POLICY_DECISION] == c.DECISION_ALLOW and span.attributes[c.POLICY_ENGINE] == "custom"
    record_policy_decision(True)  # no span at all: nothing happens, nothing raises


def test_disabled_records_nothing(exporter: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_settings, "_current", Settings(enabled=False))
    with server_call(exporter) as finished:
        record_policy_decision(False, engine="x")
    assert not any(k.startswith("jit.") for k in finished[0].attributes)


values = st.one_of(st.none(), st.text(max_size=500), st.integers(), st.floats(), st.booleans(), st.binary(max_size=50),
                   st.lists(st.text(max_size=20), max_size=100))
requests = st.one_of(values, st.lists(st.one_of(st.text(max_size=300), st.integers(), st.none()), max_size=20),
                     st.tuples(st.text(max_size=30), st.text(max_size=30)))


@settings(max_examples=80, deadline=None)
@given(decision=values, engine=values, version=values, required=values, granted=values, grant_start=values,
       eval_s=values, request=requests)
def test_any_input_still_records_the_decision(otel: Any, decision: Any, engine: Any, version: Any,
                                                       required: Any, granted: Any, grant_start: Any,
                                                       eval_s: Any, request: Any) -> None:
    with trace.get_tracer("test").start_as_current_span("/svc/M", kind=trace.SpanKind.SERVER) as span:
        token = _call_state.activate(_call_state.CallState(span=span, arrival_ns=span.start_time))
        try:
            record_policy_decision(decision, engine=engine, version=version, required=required, granted=granted,
                                   grant_start=grant_start, eval_s=eval_s, request=request)
        finally:
            _call_state.deactivate(token)
    assert span.attributes[c.POLICY_DECISION] in (c.DECISION_ALLOW, c.DECISION_DENY)
    # a request is kept whole (its values, in order) or left out: never cut into another request
    whole = (isinstance(request, list | tuple) and 0 < len(request) <= _policy.MAX_REQUEST_VALUES
             and all(type(v) is str and len(v) <= 256 for v in request))
    if whole:
        assert list(span.attributes[c.POLICY_REQUEST]) == [redact(v) for v in request]
    else:
        assert c.POLICY_REQUEST not in span.attributes


# --- the request -----------------------------------------------------------------------------------------------------
def test_the_request_is_recorded_as_evaluated(exporter: Any) -> None:
    with server_call(exporter) as finished:
        record_policy_decision("deny", engine="opa", request=("alice", "orders", "write"))
    assert list(finished[0].attributes[c.POLICY_REQUEST]) == ["alice", "orders", "write"]


def test_a_credential_in_the_request_is_redacted(exporter: Any) -> None:
    token = jwt.encode({"sub": "alice"}, "a-policy-test-key-of-32-bytes-ok", algorithm="HS256")  # short: kept whole
    with server_call(exporter) as finished:
        record_policy_decision("allow", request=[token, "orders", f"Bearer {token}"])
    recorded = list(finished[0].attributes[c.POLICY_REQUEST])
    assert recorded == ["[REDACTED]", "orders", "Bearer [REDACTED]"]
    assert not any(part in value for value in recorded for part in token.split("."))


@pytest.mark.parametrize("request_", [
    ["alice", "x" * 257, "read"],  # cut, it would be another request
    ["alice", 7, "read"],  # not a string: replay could not give it back as it was
    [f"v{i}" for i in range(_policy.MAX_REQUEST_VALUES + 1)],
    [],
    "alice",  # a string is not a list of values
])
def test_a_request_that_cannot_be_kept_whole_is_left_out_and_counted(exporter: Any, request_: Any) -> None:
    before = failure_counts().get("policy_request_skipped", 0)
    with server_call(exporter) as finished:
        record_policy_decision("deny", engine="opa", required="orders:read", request=request_)
    a = finished[0].attributes
    assert c.POLICY_REQUEST not in a and a[c.POLICY_DECISION] == c.DECISION_DENY and a[c.POLICY_ENGINE] == "opa"
    assert failure_counts()["policy_request_skipped"] == before + 1


# --- pycasbin -------------------------------------------------------------------------------------------------------
@pytest.fixture
def enforcer(tmp_path: Path, jitrace_hooks: None) -> casbin.Enforcer:
    (tmp_path / "model.conf").write_text(MODEL)
    (tmp_path / "policy.csv").write_text(POLICY)
    e = casbin.Enforcer(str(tmp_path / "model.conf"), str(tmp_path / "policy.csv"))
    e.jitrace_policy_id = "orders-rbac"
    e.jitrace_policy_version = "r42"
    return e


@pytest.mark.parametrize("method", ["enforce", "enforce_ex"])
def test_casbin_allow_records_the_matched_rule_and_roles(enforcer: casbin.Enforcer, exporter: Any,
                                                         method: str) -> None:
    with server_call(exporter) as finished:
        result = getattr(enforcer, method)("bob", "orders", "write")
    assert (result[0] if method == "enforce_ex" else result) is True
    a = finished[0].attributes
    assert a[c.POLICY_DECISION] == c.DECISION_ALLOW and a[c.POLICY_ENGINE] == "casbin"
    assert a[c.POLICY_RULE] == "p, editor, orders, write"
    assert a[c.POLICY_REQUIRED] == "orders:write"
    assert sorted(a[c.POLICY_GRANTED]) == ["editor", "viewer"]  # implicit roles: editor inherits viewer
    assert (a[c.POLICY_ID], a[c.POLICY_VERSION]) == ("orders-rbac", "r42")
    assert a[c.POLICY_EVAL_S] >= 0 and a[c.AUTH_WAIT_S] >= 0
    assert list(a[c.POLICY_REQUEST]) == ["bob", "orders", "write"]


def test_casbin_request_subject_is_hashed_as_the_token_subject(enforcer: casbin.Enforcer, exporter: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_settings, "_current", Settings(hash_subject=True))
    with server_call(exporter) as finished:
        enforcer.enforce("bob", "orders", "write")
    a = finished[0].attributes
    assert list(a[c.POLICY_REQUEST]) == [_token.hash_value("bob"), "orders", "write"]
    assert sorted(a[c.POLICY_GRANTED]) == ["editor", "viewer"]  # the roles replay binds the hashed subject to


def test_casbin_deny_has_no_rule_and_shows_what_was_missing(enforcer: casbin.Enforcer, exporter: Any) -> None:
    with server_call(exporter) as finished:
        assert enforcer.enforce("alice", "orders", "write") is False
    a = finished[0].attributes
    assert a[c.POLICY_DECISION] == c.DECISION_DENY and c.POLICY_RULE not in a
    assert a[c.POLICY_REQUIRED] == "orders:write" and list(a[c.POLICY_GRANTED]) == ["viewer"]


def test_casbin_version_from_the_environment(enforcer: casbin.Enforcer, exporter: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    del enforcer.jitrace_policy_version
    was = _settings.get()
    _settings.configure(_settings.Settings.from_env({"JITRACE_POLICY_VERSION": "from-env"}))
    try:
        with server_call(exporter) as finished:
            enforcer.enforce("alice", "orders", "read")
    finally:
        _settings.configure(was)
    assert finished[0].attributes[c.POLICY_VERSION] == "from-env"


def test_casbin_outside_a_server_call_records_nothing(enforcer: casbin.Enforcer, exporter: Any) -> None:
    with trace.get_tracer("test").start_as_current_span("startup"):
        assert enforcer.enforce("bob", "orders", "read") is True
    (span,) = exporter.get_finished_spans()
    assert not any(k.startswith("jit.") for k in span.attributes)


def test_casbin_unpatch_restores(tmp_path: Path, otel: Any) -> None:
    was = _policy.casbin_patched()
    _policy.patch_casbin()
    _policy.patch_casbin()
    assert casbin.Enforcer.__dict__["enforce"].__wrapped__ is CoreEnforcer.enforce  # one layer
    _policy.unpatch_casbin()
    assert casbin.Enforcer.enforce is CoreEnforcer.enforce
    assert casbin.Enforcer.enforce_ex is CoreEnforcer.enforce_ex
    assert "enforce" not in vars(casbin.Enforcer)  # inherited again, as before
    if was:
        _policy.patch_casbin()


# --- through a real server ------------------------------------------------------------------------------------------
def _casbin_service(enforcer: casbin.Enforcer, verifier: Any) -> grpc.GenericRpcHandler:
    """Verifies the token, then asks pycasbin whether the subject may ``act`` (the request payload) on orders."""

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        token = dict(context.invocation_metadata())["authorization"].split(" ", 1)[1]
        claims = verifier.verify(token)
        if not enforcer.enforce(claims["sub"], "orders", request.decode()):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_MISSING")
        return b"ok"

    return grpc.method_handlers_generic_handler("jit.test.Orders", {"Do": grpc.unary_unary_rpc_method_handler(handle)})


@pytest.mark.parametrize("subject, act, code", [("bob", "write", grpc.StatusCode.OK),
                                                ("alice", "write", grpc.StatusCode.PERMISSION_DENIED)])
def test_casbin_decision_lands_on_the_grpc_server_span(enforcer: casbin.Enforcer, verifier: Any, exporter: Any,
                                                       mint: Any, subject: str, act: str,
                                                       code: grpc.StatusCode) -> None:
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, handlers=[_casbin_service(enforcer, verifier)],
                         interceptors=[_server.server_interceptor()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with raw_channel(f"127.0.0.1:{port}") as channel:
            try:
                channel.unary_unary("/jit.test.Orders/Do")(act.encode(), timeout=10,
                                                           metadata=(("authorization", f"Bearer {mint(sub=subject)}"),))
                got = grpc.StatusCode.OK
            except grpc.RpcError as error:
                got = error.code()
    finally:
        server.stop(None).wait(5)
        pool.shutdown(wait=False)
    assert got == code
    a = server_span(exporter).attributes
    assert a[c.POLICY_ENGINE] == "casbin" and a[c.POLICY_VERSION] == "r42"
    assert a[c.POLICY_DECISION] == (c.DECISION_ALLOW if code == grpc.StatusCode.OK else c.DECISION_DENY)
    assert a[c.POLICY_REQUIRED] == f"orders:{act}" and a[c.TOKEN_VERDICT] == c.VERDICT_VALID
    assert list(a[c.POLICY_REQUEST]) == [subject, "orders", act]
    assert a[c.RPC_GRPC_STATUS_CODE] == code.value[0]
    assert a[c.AUTH_WAIT_S] >= 0


def test_a_server_calls_kept_facts_are_written_before_a_decision(exporter: Any, jitrace_hooks: None, mint: Any,
                                                                 rsa_key: Any) -> None:
    """jitrace's server call keeps its facts until the reply leaves; a decision recorded meanwhile writes them
    first, so the decision's grant window is the one left on the span, and the token check after it still lands."""
    import jwt

    now = int(time.time())
    token = mint(grant_id="from-token", grant_end=now + 600)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("/svc/Method", kind=trace.SpanKind.SERVER):
        call = _server_call.ServerCall.begin((("authorization", f"Bearer {token}"),), _settings.get())
        reset = _call_state.activate(call)
        try:
            record_policy_decision(True, grant_id="from-policy", grant_end=now + 60)
            jwt.decode(token, options={"verify_signature": False})  # a peek: not a check
            jwt.decode(token, rsa_key.public_key(), algorithms=["RS256"], audience="jit-test", issuer="jit-issuer")
            assert call.trailing(None) is None
        finally:
            _call_state.deactivate(reset)
    a = [s for s in exporter.get_finished_spans() if s.name == "/svc/Method"][0].attributes
    assert (a[c.GRANT_ID], a[c.GRANT_END]) == ("from-policy", now + 60)
    assert a[c.POLICY_DECISION] == c.DECISION_ALLOW
    assert a[c.TOKEN_VERDICT] == c.VERDICT_VALID and a[c.TOKEN_PRESENT] is True
    assert 0 < a[c.TOKEN_TTL_S] <= 300 and a[c.AUTH_WAIT_S] >= 0
