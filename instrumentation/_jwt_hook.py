"""PyJWT's ``decode`` patched: each verification inside a server call records its verdict on the call's span.

Covered: ``jwt.decode`` / ``jwt.decode_complete`` (module-level functions, bound to PyJWT's global instance, so they
are rebound here), ``jwt.api_jwt.decode`` / ``decode_complete``, and ``PyJWT.decode`` / ``PyJWT.decode_complete`` for
any instance. Not covered: a reference taken *before* :func:`patch` (``from jwt import decode`` at import time
before instrumenting; ``opentelemetry-instrument`` patches before the application is imported, so it is fine there).

The first check of a call sets ``jit.token.*`` (the verified token's claims, age and ttl at the check),
``jit.token.verdict`` and ``jit.auth.wait_s``; each later check (a stream re-verifying per message) adds a
``jit.token.check`` event with its verdict and ttl instead. Outside a server call the hook does nothing, nor for a
decode with ``options={"verify_signature": False}`` (a peek at the claims is not a check).
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable
from typing import Any

from jitrace.instrumentation import _call_state, _safety, _span_attrs, _token
from jitrace.instrumentation import contract as c

_METHODS = ("decode", "decode_complete")
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar("jitrace_jwt_decode", default=False)
_originals: dict[tuple[str, str], Any] = {}  # ("class"|"jwt"|"api_jwt", name) -> what was there before


def verdict_of(exc: BaseException | None) -> str:
    """The contract's verdict for PyJWT's outcome: None (decoded) is ``valid``."""
    if exc is None:
        return c.VERDICT_VALID
    import jwt

    # InvalidSignatureError is a DecodeError: test it first.
    for kind, verdict in ((jwt.InvalidSignatureError, c.VERDICT_BAD_SIGNATURE),
                          (jwt.ExpiredSignatureError, c.VERDICT_EXPIRED),
                          (jwt.ImmatureSignatureError, c.VERDICT_NOT_YET_VALID),
                          (jwt.InvalidAudienceError, c.VERDICT_BAD_AUDIENCE),
                          (jwt.InvalidIssuerError, c.VERDICT_BAD_ISSUER)):
        if isinstance(exc, kind):
            return verdict
    return c.VERDICT_MALFORMED


def _record(state: _call_state.CallState, token: object, failure: BaseException | None, started_ns: int,
            ended_ns: int) -> None:
    # try/except rather than _safety.guarded: this runs on every verified call
    try:
        _record_check(state, token, failure, started_ns, ended_ns)
    except Exception:  # noqa: BLE001 - nothing of ours may fail a call
        _safety.count("jwt_hook")


def _record_check(state: _call_state.CallState, token: object, failure: BaseException | None,
                  started_ns: int, ended_ns: int) -> None:
    verdict = verdict_of(failure)
    if isinstance(token, bytes | bytearray):
        token = bytes(token).decode("latin-1")
    token = token if isinstance(token, str) else None
    number = state.next_token_check()
    wait = state.mark_check(started_ns)
    span = state.span
    if not span.is_recording():
        return
    # PyJWT read its clock somewhere between the two stamps. The ttl is taken at the stamp its verdict agrees with:
    # an expired token's at the end (ttl <= 0), any other at the start, so a check at the very instant of expiry
    # never records "expired" with a ttl left.
    now_s = (ended_ns if verdict == c.VERDICT_EXPIRED else started_ns) / 1e9
    if number == 1:
        if token is not None and token == state.metadata_token:
            # the token from metadata, already described on arrival: only what the check adds (age and ttl at
            # the check, from the claims recorded on arrival; no re-parse, no re-set of the claims)
            attrs: dict[str, Any] = {}
            if state.token_iat is not None:
                attrs[c.TOKEN_AGE_S] = now_s - state.token_iat
            if state.token_exp is not None:
                attrs[c.TOKEN_TTL_S] = state.token_exp - now_s
        else:
            attrs = _token.token_facts(token, now_s)
        attrs[c.TOKEN_VERDICT] = verdict
        attrs.update(wait)
        _span_attrs.set_attributes(span, attrs)
        return
    if wait:
        _span_attrs.set_attributes(span, wait)
    attrs = _token.token_facts(token, now_s)
    event: dict[str, Any] = {c.TOKEN_VERDICT: verdict}
    for name in (c.TOKEN_ID, c.TOKEN_TTL_S):
        if name in attrs:
            event[name] = attrs[name]
    span.add_event(c.TOKEN_CHECK_EVENT, event)


def _unverified(args: tuple, kwargs: dict[str, Any], token_index: int) -> bool:
    """``options={"verify_signature": False}``: reading claims, not checking a token (e.g. to pick the key)."""
    at = token_index + 3  # decode(jwt, key, algorithms, options, ...)
    options = args[at] if len(args) > at else kwargs.get("options")
    return isinstance(options, dict) and options.get("verify_signature") is False


def _wrap(original: Callable[..., Any], token_index: int) -> Callable[..., Any]:
    """A recording wrapper around a decode function; ``token_index`` is where the token is in ``args``."""

    @functools.wraps(original)
    def decode(*args: Any, **kwargs: Any) -> Any:
        state = _call_state.current()
        if state is None or _inside.get():
            return original(*args, **kwargs)  # not in a server call, or decode_complete inside decode: one check
        reset = _inside.set(True)
        if _unverified(args, kwargs, token_index):
            try:
                return original(*args, **kwargs)  # a peek without verification, and whatever it calls: no check
            finally:
                _inside.reset(reset)
        token = args[token_index] if len(args) > token_index else kwargs.get("jwt")
        started_ns = time.time_ns()
        failure: BaseException | None = None
        try:
            return original(*args, **kwargs)
        except BaseException as exc:
            failure = exc
            raise  # PyJWT's own exception, unchanged
        finally:
            _inside.reset(reset)
            if failure is None or isinstance(failure, Exception):  # not an interrupt (KeyboardInterrupt...)
                _record(state, token, failure, started_ns, time.time_ns())

    decode._jitrace_original = original  # type: ignore[attr-defined]
    return decode


def patch() -> None:
    """Patch PyJWT (idempotent). Does nothing if PyJWT is not installed."""
    try:
        import jwt
        import jwt.api_jwt as api_jwt
    except ImportError:
        return
    for name in _METHODS:
        current = api_jwt.PyJWT.__dict__.get(name)
        if current is not None and not hasattr(current, "_jitrace_original"):
            _originals[("class", name)] = current
            setattr(api_jwt.PyJWT, name, _wrap(current, 1))
    for label, module in (("jwt", jwt), ("api_jwt", api_jwt)):
        for name in _METHODS:
            current = getattr(module, name, None)
            if current is not None and not hasattr(current, "_jitrace_original"):
                _originals[(label, name)] = current
                setattr(module, name, _wrap(current, 0))


def unpatch() -> None:
    """Undo :func:`patch` where jitrace's wrapper is still in place."""
    try:
        import jwt
        import jwt.api_jwt as api_jwt
    except ImportError:
        return
    targets = {"class": api_jwt.PyJWT, "jwt": jwt, "api_jwt": api_jwt}
    for (label, name), original in list(_originals.items()):
        target = targets[label]
        current = target.__dict__.get(name) if label == "class" else getattr(target, name, None)
        if current is not None and getattr(current, "_jitrace_original", None) is original:
            setattr(target, name, original)
        del _originals[(label, name)]


def is_patched() -> bool:
    import jwt

    return hasattr(jwt.decode, "_jitrace_original")
