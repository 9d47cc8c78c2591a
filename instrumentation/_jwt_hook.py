"""PyJWT's ``decode`` patched: each verification inside a server call records its verdict on the call's span.

One hook per check, through :mod:`._patching` (a plain function there, not a wrapt wrapper: it runs on every verified
call, and wrapt's call costs several times a function's): ``PyJWT.decode_complete`` on the class, and the module
functions ``jwt.decode_complete`` / ``jwt.api_jwt.decode_complete``, bound to PyJWT's global instance's unpatched
method when PyJWT is imported. PyJWT's ``decode`` (the method and the module functions) verifies through the
patched method, so every entry point passes through jitrace's code once, and a ``from jwt import decode`` taken
before :func:`patch` is recorded too (``from jwt import decode_complete`` taken before it is not). Should ``decode``
not go through ``decode_complete`` (checked once, at :func:`patch`), it is wrapped too, with a guard so that a check
is still recorded once.

The first check of a call sets ``jit.token.*`` (the verified token's claims, age and ttl at the check),
``jit.token.verdict`` and ``jit.auth.wait_s``; each later check (a stream re-verifying per message) adds a
``jit.token.check`` event with its verdict and ttl instead. Outside a server call the hook does nothing, nor for a
decode with ``options={"verify_signature": False}`` (a peek at the claims is not a check).
"""

from __future__ import annotations

import contextvars
import time
import types
from collections.abc import Callable
from typing import Any

from jitrace.instrumentation import _call_state, _patching, _safety, _span_attrs, _token
from jitrace.instrumentation import contract as c

_METHODS = ("decode", "decode_complete")
_SDK_SPANS = _span_attrs.SDK_SPANS  # spans whose fields are read directly (see _span_attrs)
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar("jitrace_jwt_decode", default=False)
_lock_acquire, _lock_release = _call_state._lock.acquire, _call_state._lock.release  # noqa: SLF001 - see _record


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
    """Record one check; never raises (a failure of jitrace's is counted). ``ended_ns``: when a failed check ended
    (for a valid one, its start: the end is not used)."""
    # try/except rather than _safety.guarded: this runs on every verified call
    try:
        verdict = c.VERDICT_VALID if failure is None else verdict_of(failure)
        if type(token) is not str:
            token = bytes(token).decode("latin-1") if isinstance(token, bytes | bytearray) else None
        # the check counted and, if it is the call's first access check, its wait: under the call state's lock
        # (acquire/release rather than ``with``: the same, in fewer steps; this runs on every check)
        wait_s: float | None = None
        _lock_acquire()
        try:
            state.checks += 1
            number = state.checks
            if state.first_check_ns is None or state.first_check_ns > started_ns:
                state.first_check_ns = started_ns
                wait_s = (started_ns - state.arrival_ns) / 1e9
                if wait_s < 0.0:  # max(0.0, wait_s), without the call
                    wait_s = 0.0
        finally:
            _lock_release()
        span = state.span
        if span._end_time is not None if type(span) in _SDK_SPANS else not span.is_recording():  # noqa: SLF001
            return
        # PyJWT read its clock somewhere between the two stamps. The ttl is taken at the stamp its verdict agrees
        # with: an expired token's at the end (ttl <= 0), any other at the start, so a check at the very instant of
        # expiry never records "expired" with a ttl left.
        now_s = (ended_ns if verdict == c.VERDICT_EXPIRED else started_ns) / 1e9
        if number == 1:
            same = token is not None and token == state.metadata_token
            if state.defers:  # jitrace's server call: written with the other facts when the reply leaves
                state.first_check = (verdict, now_s, same, None if same else token, wait_s)  # type: ignore[attr-defined]
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
            if wait_s is not None:
                attrs[c.AUTH_WAIT_S] = wait_s
            _span_attrs.set_attributes(span, attrs, clean=True)
            return
        if wait_s is not None:
            _span_attrs.set_attributes(span, {c.AUTH_WAIT_S: wait_s}, clean=True)
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


_current = _call_state._current.get  # noqa: SLF001 - the call state's context variable, read once per check


def _checked(state: _call_state.CallState, call: Callable[..., Any], args: tuple, kwargs: dict,
             nested: bool = False) -> Any:
    """PyJWT's check ``call(*args, **kwargs)`` (``args`` start at the token, whether it is PyJWT's method or a module
    function) inside the server call ``state``: recorded on its span. ``nested``: a check made inside it by another
    hooked decode (``decode`` -> ``decode_complete``, when both are hooked) is not recorded again."""
    if nested:
        reset = _inside.set(True)
        try:
            return _checked(state, call, args, kwargs)
        finally:
            _inside.reset(reset)
    options = args[3] if len(args) > 3 else kwargs.get("options")  # decode(jwt, key, algorithms, options, ...)
    if options is not None and _unverified(options):
        return call(*args, **kwargs)  # a peek without verification: no check
    token = args[0] if args else kwargs.get("jwt")
    started_ns = time.time_ns()
    try:
        decoded = call(*args, **kwargs)
    except Exception as exc:  # not an interrupt (KeyboardInterrupt...): that goes on unrecorded
        # the clock read again only for a failure: only an expired verdict's ttl is taken at the end (see _record)
        _record(state, token, exc, started_ns, time.time_ns())
        raise  # PyJWT's own exception, unchanged
    _record(state, token, None, started_ns, started_ns)
    return decoded


def _hook(original: Any, method: bool, nested: bool = False) -> Callable[..., Any]:
    """The hook of PyJWT's decode function ``original`` (a plain function, see :mod:`._patching`): ``original`` as it
    was outside a server call, one check recorded inside one. ``method``: ``original`` is stored on PyJWT's class
    (the hook then takes the instance, as the method did), else it is a module's function. ``nested``: see
    :func:`_checked` (:func:`_hook_nested`)."""
    if not method:
        def decode(*args: Any, **kwargs: Any) -> Any:
            state = _current()
            if state is None or (nested and _inside.get()):
                return original(*args, **kwargs)  # not in a server call
            return _checked(state, original, args, kwargs, nested)

        return decode
    if type(original) is types.FunctionType:  # PyJWT's own method: called with the instance, as Python calls it
        def decode_method(self: Any, *args: Any, **kwargs: Any) -> Any:
            state = _current()
            if state is None or (nested and _inside.get()):
                return original(self, *args, **kwargs)  # not in a server call
            return _checked(state, original.__get__(self), args, kwargs, nested)

        return decode_method

    def bound_method(self: Any, *args: Any, **kwargs: Any) -> Any:  # another kind of attribute: bound as Python would
        bound = original.__get__(self, type(self))
        state = _current()
        if state is None or (nested and _inside.get()):
            return bound(*args, **kwargs)
        return _checked(state, bound, args, kwargs, nested)

    return bound_method


def _hook_nested(original: Any, method: bool) -> Callable[..., Any]:
    """:func:`_hook` for PyJWTs whose ``decode`` is hooked too (it may call the hooked ``decode_complete``)."""
    return _hook(original, method, nested=True)


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


def _patches(jwt: Any, api_jwt: Any) -> list[tuple[Any, str]]:
    """Every place a check enters PyJWT: ``PyJWT.decode_complete`` and the module functions bound to PyJWT's global
    instance when PyJWT was imported (they call the unpatched method), ``decode`` too when it does not verify
    through ``decode_complete``."""
    places: list[tuple[Any, str]] = [(api_jwt.PyJWT, "decode_complete")]
    places += [(module, "decode_complete") for module in (jwt, api_jwt) if hasattr(module, "decode_complete")]
    if _nested(jwt, api_jwt):
        places += [(api_jwt.PyJWT, "decode")]
        places += [(module, "decode") for module in (jwt, api_jwt) if hasattr(module, "decode")]
    return places


def _nested(jwt: Any, api_jwt: Any) -> bool:
    """Whether ``decode`` must be wrapped as well: PyJWT's does not verify through ``decode_complete``, or a module's
    ``decode`` is not PyJWT's method (so it may not reach the wrapped one)."""
    if not _decode_goes_through_decode_complete(api_jwt):
        return True
    return not all(isinstance(getattr(getattr(module, "decode", None), "__self__", None), api_jwt.PyJWT)
                   for module in (jwt, api_jwt))


def patch() -> None:
    """Patch PyJWT (idempotent). Does nothing if PyJWT is not installed."""
    try:
        import jwt
        import jwt.api_jwt as api_jwt
    except ImportError:
        return
    if "decode_complete" not in api_jwt.PyJWT.__dict__ or is_patched():
        return  # not a PyJWT this knows, or patched already
    factory = _hook_nested if _nested(jwt, api_jwt) else _hook
    for owner, name in _patches(jwt, api_jwt):
        _patching.wrap(owner, name, factory, plain=True)


def unpatch() -> None:
    """Undo :func:`patch`: PyJWT's functions are what they were (under any wrapper another library put on them)."""
    try:
        import jwt
        import jwt.api_jwt as api_jwt
    except ImportError:
        return
    for owner in (api_jwt.PyJWT, jwt, api_jwt):
        for name in _METHODS:
            if hasattr(owner, name):
                for factory in (_hook, _hook_nested):
                    _patching.unwrap(owner, name, factory)


def is_patched() -> bool:
    """Whether PyJWT's ``decode_complete`` carries jitrace's wrapper."""
    import jwt.api_jwt as api_jwt

    return any(_patching.wrapped(api_jwt.PyJWT, "decode_complete", f) for f in (_hook, _hook_nested))
