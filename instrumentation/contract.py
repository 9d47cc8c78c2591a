"""The span contract: every ``jit.*`` name of docs/contract.md, in one place.

Both sides import these constants: the instrumentation sets them, the analyzer reads them (its SQL is checked
against this module by ``tests/test_contract.py``). This module imports nothing outside the standard library,
so the analyzer can use it without grpc or the OpenTelemetry SDK.
"""

from __future__ import annotations

from typing import Final

# --- the bearer token -------------------------------------------------------------------------------------------
TOKEN_PRESENT: Final = "jit.token.present"
TOKEN_ID: Final = "jit.token.id"  # jti, else the first 16 hex digits of SHA-256 of the token; never the token
TOKEN_SUB: Final = "jit.token.sub"
TOKEN_ISS: Final = "jit.token.iss"
TOKEN_AUD: Final = "jit.token.aud"
TOKEN_IAT: Final = "jit.token.iat"
TOKEN_NBF: Final = "jit.token.nbf"
TOKEN_EXP: Final = "jit.token.exp"
TOKEN_AGE_S: Final = "jit.token.age_s"  # local now - iat
TOKEN_TTL_S: Final = "jit.token.ttl_s"  # exp - local now; negative = expired by this clock
TOKEN_VERDICT: Final = "jit.token.verdict"
TOKEN_REFRESHED: Final = "jit.token.refreshed"

# --- the JIT grant ----------------------------------------------------------------------------------------------
GRANT_ID: Final = "jit.grant.id"
GRANT_START: Final = "jit.grant.start"
GRANT_END: Final = "jit.grant.end"

# --- the policy decision ----------------------------------------------------------------------------------------
POLICY_DECISION: Final = "jit.policy.decision"
POLICY_ENGINE: Final = "jit.policy.engine"
POLICY_ID: Final = "jit.policy.id"
POLICY_VERSION: Final = "jit.policy.version"
POLICY_RULE: Final = "jit.policy.rule"
POLICY_REQUIRED: Final = "jit.policy.required"
POLICY_GRANTED: Final = "jit.policy.granted"  # string array
POLICY_EVAL_S: Final = "jit.policy.eval_s"
POLICY_REQUEST: Final = "jit.policy.request"  # string array: the values the engine evaluated (what replay re-asks)

# --- timing and clocks ------------------------------------------------------------------------------------------
AUTH_WAIT_S: Final = "jit.auth.wait_s"  # outermost interceptor -> start of the access check
CLOCK_SENT_NS: Final = "jit.clock.sent_ns"  # client wall clock when the call left
CLOCK_PEER_SENT_NS: Final = "jit.clock.peer_sent_ns"  # on the server: the client's stamp
CLOCK_RECEIVED_NS: Final = "jit.clock.received_ns"  # on the server: its wall clock on arrival
CLOCK_OFFSET_S: Final = "jit.clock.offset_s"  # on the client: NTP estimate, server clock - client clock
CLOCK_DELAY_S: Final = "jit.clock.delay_s"

# --- the denial -------------------------------------------------------------------------------------------------
DENIAL_REASON: Final = "jit.denial.reason"  # google.rpc.ErrorInfo reason (AIP-193)

# --- span and event names, metadata keys ------------------------------------------------------------------------
ISSUE_SPAN_NAME: Final = "jit.issue"  # a JIT grant approved and its token minted
TOKEN_CHECK_EVENT: Final = "jit.token.check"  # a check on a later stream message
METADATA_SENT_NS: Final = "jit-sent-ns"  # client -> server: t1
METADATA_CLOCK: Final = "jit-clock"  # server -> client, trailing: "t2,t3" in server ns

# --- values -----------------------------------------------------------------------------------------------------
VERDICT_VALID: Final = "valid"
VERDICT_EXPIRED: Final = "expired"
VERDICT_NOT_YET_VALID: Final = "not_yet_valid"
VERDICT_BAD_SIGNATURE: Final = "bad_signature"
VERDICT_BAD_AUDIENCE: Final = "bad_audience"
VERDICT_BAD_ISSUER: Final = "bad_issuer"
VERDICT_MALFORMED: Final = "malformed"
VERDICT_MISSING: Final = "missing"
VERDICTS: Final = (
    VERDICT_VALID,
    VERDICT_EXPIRED,
    VERDICT_NOT_YET_VALID,
    VERDICT_BAD_SIGNATURE,
    VERDICT_BAD_AUDIENCE,
    VERDICT_BAD_ISSUER,
    VERDICT_MALFORMED,
    VERDICT_MISSING,
)
DECISION_ALLOW: Final = "allow"
DECISION_DENY: Final = "deny"

# gRPC status codes the analyzer treats as denials.
PERMISSION_DENIED: Final = 7
UNAUTHENTICATED: Final = 16
DENIAL_CODES: Final = (PERMISSION_DENIED, UNAUTHENTICATED)

# The standard attributes on every gRPC span (OpenTelemetry semantic conventions).
RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"

# --- causes, in the order the analyzer tries its rules ----------------------------------------------------------
CAUSES: Final = (
    "token_missing",
    "token_invalid",
    "clock_drift",
    "token_expired",
    "middleware_latency",
    "token_expired_in_flight",
    "grant_not_active",
    "policy_version_skew",
    "policy_mismatch",
    "unexplained",
)


def all_attributes() -> tuple[str, ...]:
    """Every ``jit.*`` attribute name of the contract, in declaration order."""
    return tuple(v for k, v in globals().items() if k.isupper() and isinstance(v, str) and v.startswith("jit.")
                 and k not in ("ISSUE_SPAN_NAME", "TOKEN_CHECK_EVENT"))


def column(attribute: str) -> str:
    """The column the analyzer's ``spans`` table gives an attribute: ``jit.token.ttl_s`` -> ``jit_token_ttl_s``."""
    return attribute.replace(".", "_")
