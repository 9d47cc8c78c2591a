"""PyJWT's ``decode`` patched: each verification inside a server call records its verdict on the call's span.

One wrapper per check: ``PyJWT.decode_complete`` is patched on the class, and PyJWT's ``decode`` (the method, and the
module-level ``jwt.decode`` / ``jwt.api_jwt.decode`` bound to PyJWT's global instance) verifies through it, so every
entry point passes through jitrace's code once. The module-level ``decode_complete`` functions are bound to the
original method when PyJWT is imported, so they are rebound to the patched one. Should a PyJWT's ``decode`` not go
through ``decode_complete`` (checked once, at :func:`patch`), ``decode`` and the module functions are wrapped too,
with a guard so that a check is still recorded once. Covered that way, a reference taken before :func:`patch`
(``from jwt import decode``) is recorded too; ``from jwt import decode_complete`` taken before it is not.

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
    """Record one check; never raises (a failure of jitrace's is counted)."""
    # try/except rather than _safety.guarded: this runs on every verified call
    try:
        verdict = c.VERDICT_VALID if failure is None else verdict_of(failure)
        if type(token) is not str:
            token = bytes(token).decode("latin-1") if isinstance(token, bytes | bytearray) else None
        number, wait = state.token_check(started_ns)
        span = state.span
        if not span.is_recording():
            return
        # PyJWT read its clock somewhere between the two stamps. The ttl is taken at the stamp its verdict agrees
        # with: an expired token's at the end (ttl <= 0), any other at the start, so a check at the very instant of
        # expiry never records "expired" with a ttl left.
        now_s = (ended_ns if verdict == c.VERDICT_EXPIRED else started_ns) / 1e9
        if number == 1:
            same = token is not None and token == state.metadata_token
            if state.defers:  # jitrace's server call: written with the other facts when the reply leaves
                state.first_check = (verdict, now_s, same, None if same else token, wait)  # type: ignore[attr-defined]
                return
            if same:
                # the token from metadata, already described on arrival: only what the check adds (age and ttl
                # at the check, from the claims recorded on arrival; no re-parse, no re-set of the claims)
                attrs: dict[str, Any] = {c.TOKEN_VERDICT: verdict}
                if state.token_iat is not None:
                    attrs[c.TOKEN_AGE_S] = now_s - state.token_iat
                if state.token_exp is not None:
                    attrs[c.TOKEN_TTL_S] = state.token_exp - now_s
            else:
                attrs = _token.token_facts(token, now_s)
                attrs[c.TOKEN_VERDICT] = verdict
            if wait:
                attrs.update(wait)
            _span_attrs.set_attributes(span, attrs, clean=True)
            return
        if wait:
            _span_attrs.set_attributes(span, wait, clean=True)
        attrs = _token.token_facts(token, now_s)
        event: dict[str, Any] = {c.TOKEN_VERDICT: verdict}
        for name in (c.TOKEN_ID, c.TOKEN_TTL_S):
            if name in attrs:
                event[name] = attrs[name]
        span.add_event(c.TOKEN_CHECK_EVENT, event)
    except Exception:  # noqa: BLE001 - nothing of ours may fail a call
        _safety.count("jwt_hook")


def _unverified(options: object) -> bool:
    """``options={"verify_signature": False}``: reading claims, not checking a token (e.g. to pick the key)."""
    return isinstance(options, dict) and options.get("verify_signature") is False


def _wrap(original: Callable[..., Any], token_index: int, nested: bool = False) -> Callable[..., Any]:
    """A recording wrapper around a decode function; ``token_index`` is where the token is in ``args``.

    ``nested``: the function may call another wrapped one (``decode`` -> ``decode_complete``, when PyJWT's ``decode``
    is wrapped too): a context variable then keeps the inner call from recording the same check again."""

    current = _call_state._current.get  # noqa: SLF001 - the call state's context variable, read once per check
    at = token_index + 3  # decode(jwt, key, algorithms, options, ...)

    @functools.wraps(original)
    def decode(*args: Any, **kwargs: Any) -> Any:
        state = current()
        if state is None or (nested and _inside.get()):
            return original(*args, **kwargs)  # not in a server call, or decode_complete inside decode: one check
        options = args[at] if len(args) > at else kwargs.get("options")
        if options is not None and _unverified(options):
            return original(*args, **kwargs)  # a peek without verification: no check
        reset = _inside.set(True) if nested else None
        token = args[token_index] if len(args) > token_index else kwargs.get("jwt")
        started_ns = time.time_ns()
        failure: BaseException | None = None
        try:
            return original(*args, **kwargs)
        except BaseException as exc:
            failure = exc
            raise  # PyJWT's own exception, unchanged
        finally:
            if reset is not None:
                _inside.reset(reset)
            if failure is None or isinstance(failure, Exception):  # not an interrupt (KeyboardInterrupt...)
                _record(state, token, failure, started_ns, time.time_ns())

    decode._jitrace_original = original  # type: ignore[attr-defined]
    return decode


def _decode_goes_through_decode_complete(api_jwt: Any) -> bool:
    """Whether ``PyJWT.decode`` verifies by calling ``self.decode_complete`` (PyJWT 2): probed on a subclass."""
    seen: list[bool] = []

    class Probe(api_jwt.PyJWT):  # type: ignore[misc]
        def decode_complete(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            seen.append(True)
            return {"payload": {}, "header": {}, "signature": b""}

    try:
        Probe().decode("a.b.c", options={"verify_signature": False})
    except Exception:  # noqa: BLE001 - any failure: not the PyJWT this expects
        return False
    return bool(seen)


def _set(label: str, target: Any, name: str, value: Any) -> None:
    current = target.__dict__.get(name) if label == "class" else getattr(target, name, None)
    if current is not None and not hasattr(current, "_jitrace_original"):
        _originals[(label, name)] = current
        setattr(target, name, value(current))


def patch() -> None:
    """Patch PyJWT (idempotent). Does nothing if PyJWT is not installed."""
    try:
        import jwt
        import jwt.api_jwt as api_jwt
    except ImportError:
        return
    if "decode_complete" not in api_jwt.PyJWT.__dict__:
        return  # not a PyJWT this knows
    delegates = _decode_goes_through_decode_complete(api_jwt)
    instance = getattr(api_jwt, "_jwt_global_obj", None)
    _set("class", api_jwt.PyJWT, "decode_complete", lambda f: _wrap(f, 1, nested=not delegates))
    if not delegates:
        _set("class", api_jwt.PyJWT, "decode", lambda f: _wrap(f, 1, nested=True))
    for label, module in (("jwt", jwt), ("api_jwt", api_jwt)):
        for name in _METHODS:
            if name == "decode" and delegates:
                continue  # bound to PyJWT's instance: verifies through the patched decode_complete
            bound = getattr(module, name, None)
            if isinstance(instance, api_jwt.PyJWT) and getattr(bound, "__self__", None) is instance:
                # PyJWT's global instance's method, bound before the patch: bound again, to the patched one
                _set(label, module, name, lambda f, n=name: getattr(instance, n))
            else:
                _set(label, module, name, lambda f: _wrap(f, 0, nested=not delegates))


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
        if current is not None and _is_ours(current):
            setattr(target, name, original)
        del _originals[(label, name)]


def _is_ours(value: Any) -> bool:
    """A wrapper of jitrace's, or a method bound to one."""
    return hasattr(value, "_jitrace_original")


def is_patched() -> bool:
    import jwt.api_jwt as api_jwt

    return _is_ours(api_jwt.PyJWT.__dict__.get("decode_complete"))
