"""PyJWT's decode, patched: the verdict of each verification inside a server call, nothing outside one.

The server call is a real SDK server span made current with jitrace's call state, as the server interceptor does.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import jwt.api_jwt
import pytest
from helpers import server_call
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace

from jitrace.instrumentation import _call_state, _jwt_hook, _patching
from jitrace.instrumentation import contract as c

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def _now() -> int:
    """Now, read when a token is minted: a time taken at import would let tokens expire in a long suite."""
    return int(time.time())


def _hs(**claims: Any) -> str:
    now = _now()
    base = {"sub": "bob", "iss": "iss-1", "aud": "aud-1", "iat": now, "nbf": now, "exp": now + 120, "jti": "j-1"}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, SECRET, algorithm="HS256")


def _decode(token: str, **kwargs: Any) -> dict:
    return jwt.decode(token, SECRET, algorithms=["HS256"], audience="aud-1", issuer="iss-1", **kwargs)


@pytest.fixture
def hooked(otel: Any, jitrace_hooks: None) -> None:
    return None


CASES = {
    "valid": (lambda: _hs(), c.VERDICT_VALID),
    "expired": (lambda: _hs(iat=_now() - 100, exp=_now() - 50), c.VERDICT_EXPIRED),
    "not_yet_valid": (lambda: _hs(nbf=_now() + 600), c.VERDICT_NOT_YET_VALID),
    "bad_signature": (lambda: jwt.encode({"sub": "x"}, "another-secret-long-enough-for-hs256!!", algorithm="HS256"),
                      c.VERDICT_BAD_SIGNATURE),
    "bad_audience": (lambda: _hs(aud="other"), c.VERDICT_BAD_AUDIENCE),
    "bad_issuer": (lambda: _hs(iss="other"), c.VERDICT_BAD_ISSUER),
    "malformed": (lambda: "definitely-not-a-jwt", c.VERDICT_MALFORMED),
    "missing_claim": (lambda: _hs(aud=None), c.VERDICT_MALFORMED),  # MissingRequiredClaimError: "the rest"
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("entry", ["jwt.decode", "api_jwt.decode", "instance.decode", "jwt.decode_complete"])
def test_each_entry_point_records_the_verdict(hooked: None, exporter: Any, case: str, entry: str) -> None:
    make, verdict = CASES[case]
    token = make()
    decode = {"jwt.decode": jwt.decode, "api_jwt.decode": jwt.api_jwt.decode,
              "instance.decode": jwt.PyJWT().decode, "jwt.decode_complete": jwt.decode_complete}[entry]
    with server_call(exporter) as finished:
        try:
            decode(token, SECRET, algorithms=["HS256"], audience="aud-1", issuer="iss-1")
            raised = None
        except jwt.PyJWTError as exc:
            raised = exc
    assert (raised is None) == (verdict == c.VERDICT_VALID)
    a = finished[0].attributes
    assert a[c.TOKEN_VERDICT] == verdict
    assert a[c.AUTH_WAIT_S] >= 0
    assert not finished[0].events  # decode_complete inside decode is the same check, not a second one
    if case in ("valid", "expired", "bad_audience"):
        assert a[c.TOKEN_ID] == "j-1" and a[c.TOKEN_SUB] == "bob" and a[c.TOKEN_EXP] == jwt.decode(
            token, options={"verify_signature": False})["exp"]


def test_the_exception_reaches_the_service_unchanged(hooked: None, exporter: Any) -> None:
    token = _hs(exp=_now() - 30)
    with pytest.raises(jwt.ExpiredSignatureError) as plain:
        jwt.api_jwt.PyJWT.decode_complete.__wrapped__(jwt.api_jwt.PyJWT(), token, SECRET, algorithms=["HS256"])
    with server_call(exporter), pytest.raises(jwt.ExpiredSignatureError) as hooked_exc:
        _decode(token)
    assert str(hooked_exc.value) == str(plain.value)


def test_outside_a_server_call_nothing_is_recorded(hooked: None, exporter: Any) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("not-a-server-call"):
        assert _decode(_hs())["sub"] == "bob"
    (span,) = exporter.get_finished_spans()
    assert not any(k.startswith("jit.") for k in span.attributes)


def test_later_checks_are_events(hooked: None, exporter: Any) -> None:
    with server_call(exporter) as finished:
        _decode(_hs(jti="first"))
        with pytest.raises(jwt.ExpiredSignatureError):
            _decode(_hs(jti="second", iat=_now() - 100, exp=_now() - 5))
    span = finished[0]
    assert span.attributes[c.TOKEN_ID] == "first" and span.attributes[c.TOKEN_VERDICT] == c.VERDICT_VALID
    (event,) = span.events
    assert event.name == c.TOKEN_CHECK_EVENT
    assert event.attributes[c.TOKEN_VERDICT] == c.VERDICT_EXPIRED and event.attributes[c.TOKEN_ID] == "second"
    assert event.attributes[c.TOKEN_TTL_S] < 0


def _pyjwt_functions() -> tuple[Any, ...]:
    """PyJWT's decode functions as stored: the class's, and the module functions bound to its global instance."""
    return (jwt.api_jwt.PyJWT.__dict__["decode_complete"], jwt.api_jwt.PyJWT.__dict__["decode"], jwt.decode,
            jwt.decode_complete, jwt.api_jwt.decode, jwt.api_jwt.decode_complete)


def test_patch_is_idempotent_and_unpatch_restores(otel: Any) -> None:
    was = _jwt_hook.is_patched()
    _jwt_hook.unpatch()
    originals = _pyjwt_functions()
    _jwt_hook.patch()
    _jwt_hook.patch()
    wrapper = jwt.api_jwt.PyJWT.__dict__["decode_complete"]
    assert wrapper.__wrapped__ is originals[0]  # one layer, not two
    # one wrapper per check: decode verifies through decode_complete, so it is left as it is
    assert jwt.api_jwt.PyJWT.__dict__["decode"] is originals[1] and jwt.decode is originals[2]
    # the module-level decode_complete (bound to PyJWT's instance before the patch) is wrapped once
    assert jwt.decode_complete.__wrapped__ is originals[3] and jwt.api_jwt.decode_complete.__wrapped__ is originals[5]
    _jwt_hook.unpatch()
    assert all(now is before for now, before in zip(_pyjwt_functions(), originals, strict=True))
    assert not _jwt_hook.is_patched()
    if was:
        _jwt_hook.patch()


def test_a_pyjwt_whose_decode_does_not_delegate_is_wrapped_too(otel: Any, exporter: Any,
                                                               monkeypatch: Any) -> None:
    """The fallback for a PyJWT whose decode verifies by itself: decode wrapped as well, still one check a call."""
    was = _jwt_hook.is_patched()
    _jwt_hook.unpatch()
    monkeypatch.setattr(_jwt_hook, "_decode_goes_through_decode_complete", lambda api_jwt: False)
    _jwt_hook.patch()
    try:
        assert _patching.wrapped(jwt.api_jwt.PyJWT, "decode", _jwt_hook._hook_nested)
        assert _patching.wrapped(jwt, "decode", _jwt_hook._hook_nested)
        for decode in (jwt.decode, jwt.api_jwt.PyJWT().decode, jwt.decode_complete):
            with server_call(exporter) as finished:
                decode(_hs(jti="fallback"), SECRET, algorithms=["HS256"], audience="aud-1", issuer="iss-1")
            (span,) = finished
            assert span.attributes[c.TOKEN_VERDICT] == c.VERDICT_VALID and not span.events  # recorded once
            exporter.clear()
    finally:
        _jwt_hook.unpatch()
        monkeypatch.undo()
        if was:
            _jwt_hook.patch()
    assert not _patching.wrapped(jwt, "decode", _jwt_hook._hook_nested)


def test_pyjwt_2_decode_goes_through_decode_complete() -> None:
    assert _jwt_hook._decode_goes_through_decode_complete(jwt.api_jwt)


@settings(max_examples=60, deadline=None)
@given(token=st.one_of(st.text(max_size=200), st.binary(max_size=200),
                       st.lists(st.text(max_size=40), min_size=3, max_size=3).map(".".join)))
def test_any_input_decodes_as_without_the_hook(otel: Any, token: Any) -> None:
    """Whatever is passed to decode, the hook changes neither the result nor the exception."""
    was = _jwt_hook.is_patched()

    def run(fn: Any, *args: Any) -> tuple[str, str]:
        try:
            return "ok", repr(fn(*args, SECRET, algorithms=["HS256"]))
        except Exception as exc:  # noqa: BLE001 - comparing outcomes
            return type(exc).__name__, str(exc)

    _jwt_hook.unpatch()
    expected = [run(jwt.decode, token), run(jwt.decode_complete, token)]
    _jwt_hook.patch()
    try:
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("/svc/M", kind=trace.SpanKind.SERVER) as span:
            reset = _call_state.activate(_call_state.CallState(span=span, arrival_ns=span.start_time))
            try:
                assert [run(jwt.decode, token), run(jwt.decode_complete, token)] == expected
            finally:
                _call_state.deactivate(reset)
    finally:
        if not was:
            _jwt_hook.unpatch()


def test_a_peek_without_verification_is_not_a_check(hooked: None, exporter: Any) -> None:
    """Reading claims unverified (to choose a key, say) records nothing; the real check after it does."""
    with server_call(exporter) as finished:
        jwt.decode(_hs(jti="peeked"), options={"verify_signature": False})
        with pytest.raises(jwt.InvalidAudienceError):
            jwt.decode(_hs(jti="checked", aud="other"), SECRET, algorithms=["HS256"], audience="aud-1")
    a = finished[0].attributes
    assert a[c.TOKEN_ID] == "checked" and a[c.TOKEN_VERDICT] == c.VERDICT_BAD_AUDIENCE and not finished[0].events


@pytest.mark.parametrize("first_check", [True, False])
def test_a_check_at_the_instant_of_expiry_records_no_time_left(hooked: None, exporter: Any, monkeypatch: Any,
                                                               first_check: bool) -> None:
    """PyJWT reads its clock between the hook's two stamps. Here it says expired while the first stamp is still 50
    microseconds before ``exp``: the recorded ttl must not claim time left (the analyzer would then find the token
    valid at the check and leave the denial undecided)."""
    exp = _now() - 1  # expired by PyJWT's clock
    # the valid first check (streams) reads any earlier instant (once: a valid check's end is not read); then the
    # expired check's start and end
    earlier = [(exp - 2) * 10**9] if not first_check else []
    stamps = iter([*earlier, exp * 10**9 - 50_000, exp * 10**9 + 50_000])
    monkeypatch.setattr(_jwt_hook.time, "time_ns", lambda: next(stamps))
    token = _hs(iat=exp - 3, nbf=exp - 3, exp=exp)
    with server_call(exporter) as finished:
        if not first_check:
            _decode(_hs())  # a valid first check: the stream's later check becomes an event
        with pytest.raises(jwt.ExpiredSignatureError):
            _decode(token)
    (span,) = finished
    if first_check:
        ttl, verdict = span.attributes[c.TOKEN_TTL_S], span.attributes[c.TOKEN_VERDICT]
    else:
        (event,) = [e for e in span.events if e.name == c.TOKEN_CHECK_EVENT]
        ttl, verdict = event.attributes[c.TOKEN_TTL_S], event.attributes[c.TOKEN_VERDICT]
    assert verdict == c.VERDICT_EXPIRED
    assert ttl <= 0
