"""Access-policy decisions on the server span: a public API, and pycasbin's ``Enforcer.enforce`` recorded by itself.

:func:`record_policy_decision` sets ``jit.policy.*`` / ``jit.grant.*`` on the current server call's span (else on the
current span, if it records) and marks the start of the access check for ``jit.auth.wait_s``. In one call, the first
decision is recorded, and a later *deny* replaces an earlier allow (the deny is what decided the call).

pycasbin (``casbin.Enforcer.enforce`` / ``enforce_ex``, and subclasses), inside a server call, records:
engine ``casbin``; decision; required = the request values after the subject joined by ``:`` (``sub, obj, act`` ->
``obj:act``); granted = the subject's roles (implicit roles, i.e. through role inheritance, where the enforcer has
them); rule = the matched policy line from ``enforce_ex``'s explanation (``p, alice, data1, read``); eval_s; and
request = the enforce values themselves (``jitrace replay`` evaluates them again under a candidate policy; with
``JITRACE_HASH_SUBJECT`` the subject, the first value, is hashed as ``jit.token.sub`` is).
The policy id and version come from the enforcer's attributes ``jitrace_policy_id`` / ``jitrace_policy_version``
(set them when you load a policy revision), else the variables ``JITRACE_POLICY_ID`` / ``JITRACE_POLICY_VERSION``.

A request is recorded as it was evaluated or not at all: values holding a credential become ``[REDACTED]`` (the
analyzer's pattern, analyzer/redact.py); a value that is not a string, one longer than ``JITRACE_MAX_ATTRIBUTE_CHARS``,
or more than ``MAX_REQUEST_VALUES`` values leave the request out (counted as ``policy_request_skipped``): cut, it would
replay as another request.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace

from jitrace.analyzer.redact import redact  # standard library only: one credential pattern for both sides
from jitrace.instrumentation import _call_state, _patching, _safety, _settings, _token
from jitrace.instrumentation import contract as c

_MAX_GRANTED = 64  # roles/scopes kept on a span
MAX_REQUEST_VALUES = 16  # values of a policy request kept on a span (casbin's are usually 3 or 4)


def _decision(decision: object) -> str:
    if isinstance(decision, bool):
        return c.DECISION_ALLOW if decision else c.DECISION_DENY
    text = str(decision).strip().lower()
    if text in ("allow", "allowed", "permit", "true", "grant", "granted"):
        return c.DECISION_ALLOW
    return c.DECISION_DENY


def _text(value: object) -> str:
    limit = _settings.get().max_attribute_chars
    text = value if isinstance(value, str) else str(value)
    return text[:limit]


def _request(values: object) -> list[str] | None:
    """The request as recorded: its values redacted, or None (and counted) when it cannot be kept whole."""
    if values is None:
        return None
    items = list(values) if isinstance(values, list | tuple) else None
    limit = _settings.get().max_attribute_chars
    if not items or len(items) > MAX_REQUEST_VALUES or not all(type(v) is str and len(v) <= limit for v in items):
        _safety.count("policy_request_skipped")
        return None
    return [redact(v) for v in items]


def _attributes(decision: str, engine: object, policy_id: object, version: object, rule: object, required: object,
                granted: Sequence[object] | None, grant: dict[str, object], eval_s: float | None,
                request: object = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {c.POLICY_DECISION: decision}
    for name, value in ((c.POLICY_ENGINE, engine), (c.POLICY_ID, policy_id), (c.POLICY_VERSION, version),
                        (c.POLICY_RULE, rule), (c.POLICY_REQUIRED, required)):
        if value is not None:
            attrs[name] = _text(value)
    if granted is not None:
        items = list(granted)[:_MAX_GRANTED] if isinstance(granted, list | tuple | set | frozenset) else [granted]
        attrs[c.POLICY_GRANTED] = [_text(g) for g in items]
    if _seconds(eval_s) is not None:
        attrs[c.POLICY_EVAL_S] = float(eval_s)  # type: ignore[arg-type]
    recorded = _request(request)
    if recorded is not None:
        attrs[c.POLICY_REQUEST] = recorded
    attrs.update(_token.grant_attributes(grant))
    return attrs


def _seconds(value: object) -> float | None:
    # a duration in seconds: finite, not negative, and not beyond a day (anything else is not an evaluation time)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value <= 86400:
        return None
    return float(value)


@_safety.guarded("policy")
def record_policy_decision(decision: bool | str, *, engine: str | None = None, policy_id: str | None = None,
                           version: str | int | None = None, rule: str | None = None, required: str | None = None,
                           granted: Sequence[str] | None = None, grant_id: str | None = None,
                           grant_start: float | None = None, grant_end: float | None = None,
                           eval_s: float | None = None, request: Sequence[str] | None = None) -> None:
    """Record an access-policy decision (``True``/``"allow"`` or ``False``/``"deny"``) on the current server span.

    ``eval_s`` is how long the evaluation took: the access check is taken to have started that long ago. The grant
    window (``grant_*``, Unix seconds in the issuer's clock) is for grants that are policy input, not token claims.
    ``request`` is what the engine evaluated, as strings (``jit.policy.request``: what ``jitrace replay`` evaluates
    again; see the module's docstring for what is kept). Does nothing when jitrace is disabled; never raises.
    """
    if not _settings.get().enabled:
        return
    now_ns = time.time_ns()
    state = _call_state.current()
    verdict = _decision(decision)
    if state is not None:
        took = _seconds(eval_s)
        started = now_ns - int(took * 1e9) if took else now_ns
        wait = state.mark_check(started)
        span = state.span
        state.flush()  # what jitrace keeps for the span first: a decision's grant window overrides the token's
        if not state.note_decision(verdict == c.DECISION_DENY):
            if wait:
                span.set_attributes(wait)
            return
    else:
        wait = {}
        span = trace.get_current_span()
    if not span.is_recording():
        return
    grant = {"grant_id": grant_id, "grant_start": grant_start, "grant_end": grant_end}
    attrs = _attributes(verdict, engine, policy_id, version, rule, required, granted, grant, eval_s, request)
    attrs.update(wait)
    span.set_attributes(attrs)


# --- pycasbin -------------------------------------------------------------------------------------------------------
_outer: contextvars.ContextVar[dict | None] = contextvars.ContextVar("jitrace_casbin", default=None)


def _policy_ref(enforcer: Any, attribute: str, setting: str) -> str | None:
    value = getattr(enforcer, attribute, None)
    if value is None:
        value = getattr(_settings.get(), setting) or None
    return None if value is None else str(value)


def _roles(enforcer: Any, subject: object) -> list[str] | None:
    if not isinstance(subject, str):
        return None
    for method in ("get_implicit_roles_for_user", "get_roles_for_user"):
        fn = getattr(enforcer, method, None)
        if fn is None:
            continue
        try:
            return [str(r) for r in fn(subject)]
        except Exception:  # noqa: BLE001 - a model without roles: try the next way, else none
            continue
    return None


@_safety.guarded("policy_hook")
def _record_casbin(enforcer: Any, rvals: tuple, allowed: object, explain: object, eval_s: float) -> None:
    if _call_state.current() is None:
        return  # a check outside a server call (start-up, a batch job): not a call's decision
    rule = None
    if isinstance(explain, list | tuple) and explain:
        rule = "p, " + ", ".join(str(v) for v in explain)
    required = ":".join(str(v) for v in rvals[1:]) if len(rvals) > 1 else None
    request = list(rvals)
    if request and isinstance(request[0], str) and _settings.get().hash_subject:
        request[0] = _token.hash_value(request[0])
    record_policy_decision(bool(allowed), engine="casbin",
                           policy_id=_policy_ref(enforcer, "jitrace_policy_id", "policy_id"),
                           version=_policy_ref(enforcer, "jitrace_policy_version", "policy_version"),
                           rule=rule, required=required, granted=_roles(enforcer, rvals[0] if rvals else None),
                           eval_s=eval_s, request=request)


def _enforce(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict, explained: bool) -> Any:
    """``enforce`` (returns a bool) or ``enforce_ex`` (returns ``(bool, explain)``), recorded once per outer call."""
    box = _outer.get()
    if box is not None or _call_state.current() is None:
        result = wrapped(*args, **kwargs)
        if box is not None and explained and "explain" not in box:
            with _safety.guard("policy_hook"):
                box["explain"] = result[1]  # enforce -> enforce_ex: keep the matched rule for the outer record
        return result
    box = {}
    reset = _outer.set(box)
    started = time.perf_counter()
    try:
        result = wrapped(*args, **kwargs)
    finally:
        _outer.reset(reset)
    eval_s = time.perf_counter() - started
    with _safety.guard("policy_hook"):
        allowed, explain = (result[0], result[1]) if explained else (result, box.get("explain"))
        _record_casbin(instance, args, allowed, explain, eval_s)
    return result


def _casbin_enforce(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    return _enforce(wrapped, instance, args, kwargs, explained=False)


def _casbin_enforce_ex(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    return _enforce(wrapped, instance, args, kwargs, explained=True)


_CASBIN_PATCHES = (("enforce", _casbin_enforce), ("enforce_ex", _casbin_enforce_ex))


def patch_casbin() -> None:
    """Record pycasbin's ``Enforcer.enforce`` / ``enforce_ex`` (idempotent). Does nothing without pycasbin."""
    try:
        import casbin
    except ImportError:
        return
    for name, wrapper in _CASBIN_PATCHES:
        if hasattr(casbin.Enforcer, name):
            _patching.wrap(casbin.Enforcer, name, wrapper)


def unpatch_casbin() -> None:
    """Undo :func:`patch_casbin`: ``Enforcer`` has its own methods again (or inherits them, as before)."""
    try:
        import casbin
    except ImportError:
        return
    for name, wrapper in _CASBIN_PATCHES:
        if hasattr(casbin.Enforcer, name):
            _patching.unwrap(casbin.Enforcer, name, wrapper)


def casbin_patched() -> bool:
    """Whether pycasbin's ``Enforcer.enforce`` carries jitrace's wrapper."""
    import casbin

    return _patching.wrapped(casbin.Enforcer, "enforce", _casbin_enforce)
