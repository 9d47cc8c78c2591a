"""Token facts: what a bearer token says about itself, read without verifying it and without keeping it.

Both the client (at send) and the server (on arrival and at check) call :func:`token_facts`, which parses each token
once (:func:`token_attributes`) and ages the result per call. The raw token, and any part of it, never leaves this
module: only its id (``jti``, else a SHA-256 prefix), its claims and derived durations do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jitrace.instrumentation import _safety, _settings
from jitrace.instrumentation import contract as c

AttributeValue = str | bool | int | float | Sequence[str]

# Claims that carry the JIT grant behind a token (see README: "Token conventions").
GRANT_CLAIMS = {"grant_id": c.GRANT_ID, "grant_start": c.GRANT_START, "grant_end": c.GRANT_END}


def metadata_value(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> str | bytes | None:
    """The value of ``key`` in call metadata (the first; a key in any case), else None."""
    for k, v in metadata or ():
        if k == key or k.lower() == key:
            return v
    return None


def token_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None, key: str | None = None) -> str | None:
    """The bearer token in call metadata (``authorization: Bearer <jwt>`` or a bare value), else None."""
    value = metadata_value(metadata, key or _settings.get().token_metadata_key)
    return None if value is None else value_facts(value)[0]


def bearer_value(value: str | bytes) -> str:
    """The token in a metadata value: ``Bearer <jwt>`` (any case) or a bare value."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    return rest.strip() if rest and scheme.lower() == "bearer" else value


def token_id(token: str, claims: dict | None = None) -> str:
    """``jti`` when the token has one, else the first 16 hex digits of the token's SHA-256. Never the token itself."""
    jti = (claims or {}).get("jti")
    if isinstance(jti, str | int) and not isinstance(jti, bool) and str(jti):
        return _cap(str(jti))
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def hash_value(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def unverified_claims(token: str) -> dict | None:
    """The JWT payload as a dict, without verifying anything; None when the token is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return claims if isinstance(claims, dict) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer claim beyond any float (JSON allows it)
        return None
    return value if math.isfinite(value) else None


def _cap(value: str) -> str:
    limit = _settings.get().max_attribute_chars
    return value if len(value) <= limit else value[:limit]


def token_attributes(token: str | None, now_s: float | None = None) -> dict[str, AttributeValue]:
    """Span attributes for a token seen at ``now_s`` (local wall clock, Unix seconds).

    A missing token gives ``jit.token.present = False``. An oversized or unreadable token gives its presence and id
    only; nothing here raises for any input.
    """
    if not token:
        return {c.TOKEN_PRESENT: False}
    settings = _settings.get()
    if len(token) > settings.max_token_bytes:
        _safety.count("token_too_large")
        return {c.TOKEN_PRESENT: True, c.TOKEN_ID: token_id(token)}
    now_s = time.time() if now_s is None else now_s
    claims = unverified_claims(token)
    attrs: dict[str, AttributeValue] = {c.TOKEN_PRESENT: True, c.TOKEN_ID: token_id(token, claims)}
    if claims is None:
        return attrs
    sub = claims.get("sub")
    if isinstance(sub, str):
        attrs[c.TOKEN_SUB] = hash_value(sub) if settings.hash_subject else _cap(sub)
    iss = claims.get("iss")
    if isinstance(iss, str):
        attrs[c.TOKEN_ISS] = _cap(iss)
    aud = claims.get("aud")
    if isinstance(aud, str):
        attrs[c.TOKEN_AUD] = _cap(aud)
    elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        attrs[c.TOKEN_AUD] = _cap(",".join(aud))
    for claim, name in (("iat", c.TOKEN_IAT), ("nbf", c.TOKEN_NBF), ("exp", c.TOKEN_EXP)):
        value = _number(claims.get(claim))
        if value is not None:
            attrs[name] = value
    if (iat := _number(claims.get("iat"))) is not None:
        attrs[c.TOKEN_AGE_S] = now_s - iat
    if (exp := _number(claims.get("exp"))) is not None:
        attrs[c.TOKEN_TTL_S] = exp - now_s
    attrs.update(grant_attributes(claims))
    return attrs


def grant_attributes(claims: dict) -> dict[str, AttributeValue]:
    """``jit.grant.*`` from the grant claims of a token (or any dict using the same names)."""
    attrs: dict[str, AttributeValue] = {}
    grant_id = claims.get("grant_id")
    if isinstance(grant_id, str | int) and not isinstance(grant_id, bool):
        attrs[c.GRANT_ID] = _cap(str(grant_id))
    for claim in ("grant_start", "grant_end"):
        value = _number(claims.get(claim))
        if value is not None:
            attrs[GRANT_CLAIMS[claim]] = value
    return attrs


# Token facts by token: a service sees the same token on many calls, and parsing it (base64 + JSON) is most of
# jitrace's cost per call. One cache for the client, the server and the PyJWT hook; only in this process's memory,
# bounded (emptied when full), emptied when the settings change; never exported (only its derived facts are).
# Each entry: the facts but age and ttl, and the iat and exp they are worked out from.
_FACTS_MAX = 256
_facts: dict[str, tuple[dict[str, Any], float | None, float | None]] = {}
_facts_settings: list[_settings.Settings | None] = [None]


_ABSENT: dict[str, Any] = {}
# A call without a token: its facts, as the shared part of a token's (see value_facts)
ABSENT_FACTS: Mapping[str, Any] = {c.TOKEN_PRESENT: False}


def _shared(token: str, settings: _settings.Settings) -> tuple[Mapping[str, Any], float | None, float | None]:
    """A token's facts but age and ttl (one mapping per token, shared: not to be changed), and the iat and exp claims
    they are worked out from (None when not a number). Parsed once per token; an oversized one is refused (counted)
    each time, and not kept."""
    hit = _facts.get(token) if settings is _facts_settings[0] else None
    if hit is None:
        if len(token) > settings.max_token_bytes:
            return token_attributes(token), None, None
        if settings is not _facts_settings[0]:
            _facts.clear()
            _values.clear()
            _facts_settings[0] = settings
        attrs = token_attributes(token, 0.0)
        # age and ttl are worked out per call, from the iat and exp claims (when they are numbers)
        iat = attrs[c.TOKEN_IAT] if attrs.pop(c.TOKEN_AGE_S, None) is not None else None
        exp = attrs[c.TOKEN_EXP] if attrs.pop(c.TOKEN_TTL_S, None) is not None else None
        hit = (attrs, iat, exp)
        if len(_facts) >= _FACTS_MAX:
            _facts.clear()
        _facts[token] = hit
    return hit


def token_facts(token: str | None, now_s: float | None = None) -> dict[str, Any]:
    """:func:`token_attributes`, parsed once per token; age and ttl at ``now_s``. A new dict each call."""
    static, dynamic = token_facts_split(token, now_s)
    return {**static, **dynamic}


def token_facts_split(token: str | None, now_s: float | None = None) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """:func:`token_facts` in two parts: the facts that do not change with time (one mapping per token, shared: not
    to be changed) and a new dict with the age and ttl at ``now_s``, so the first is written to a span without a
    copy (``_span_attrs.set_attributes(span, dynamic, base=static)``)."""
    now_s = time.time() if now_s is None else now_s
    if not token:
        return _ABSENT, {c.TOKEN_PRESENT: False}
    static, iat, exp = _shared(token, _settings._current)  # noqa: SLF001 - see _settings
    return static, aged(iat, exp, now_s)


def aged(iat: float | None, exp: float | None, now_s: float) -> dict[str, Any]:
    """A new dict with a token's age and ttl at ``now_s`` (from its iat and exp claims; none when None)."""
    dynamic: dict[str, Any] = {}
    if iat is not None:
        dynamic[c.TOKEN_AGE_S] = now_s - iat
    if exp is not None:
        dynamic[c.TOKEN_TTL_S] = exp - now_s
    return dynamic


# Metadata value -> (its token, the token's shared facts, iat, exp): all that a call's token needs of jitrace's per
# call but age and ttl, in one look-up for a value seen before (a client sends the same value call after call).
# Bounded like the facts, emptied with them; values longer than a token jitrace would parse are not kept.
_VALUES_MAX = 256
_VALUE_SLACK = 64  # "Bearer " and surrounding spaces
_values: dict[str | bytes, tuple[str, Mapping[str, Any], float | None, float | None]] = {}
ValueFacts = tuple[str, Mapping[str, Any], float | None, float | None]
# The value looked up last, with its facts and the settings they were worked out under (no settings: none yet). A
# server gets each call's metadata as a new string, whose hashing (for the look-up in _values) costs more than
# comparing it with the last value; a client sending the same value object finds it by identity. The per-call paths
# compare with it inline (``last[2] if last[0] is settings and last[1] == value else value_facts(value)``).
_NOTHING_YET: tuple[None, None, None] = (None, None, None)
last_value: list[tuple[_settings.Settings, str | bytes, ValueFacts] | tuple[None, None, None]] = [_NOTHING_YET]


def value_facts(value: str | bytes) -> ValueFacts:
    """``(token, shared facts, iat, exp)`` of a metadata value (``Bearer <jwt>`` or a bare token): the token as
    :func:`bearer_value` finds it, and :func:`token_facts_split`'s shared part of its facts (:data:`ABSENT_FACTS`
    for an empty one) with the claims its age and ttl come from. Age and ttl at a time: :func:`aged`."""
    settings = _settings._current  # noqa: SLF001 - see _settings
    last = last_value[0]
    if last[0] is settings and last[1] == value:
        return last[2]  # type: ignore[return-value]
    hit = _values.get(value) if settings is _facts_settings[0] else None
    if hit is not None:
        last_value[0] = (settings, value, hit)
        return hit
    token = bearer_value(value)
    if not token:
        return token, ABSENT_FACTS, None, None
    static, iat, exp = _shared(token, settings)
    facts = (token, static, iat, exp)
    # kept only when parsed under the settings in force (not an oversized token, refused and counted per call)
    if settings is _facts_settings[0] and len(token) <= settings.max_token_bytes and \
            len(value) <= settings.max_token_bytes + _VALUE_SLACK:
        if len(_values) >= _VALUES_MAX:
            _values.clear()
        _values[value] = facts
        last_value[0] = (settings, value, facts)
    return facts
