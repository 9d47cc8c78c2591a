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


def token_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None, key: str | None = None) -> str | None:
    """The bearer token in call metadata (``authorization: Bearer <jwt>`` or a bare value), else None."""
    if not metadata:
        return None
    key = key or _settings.get().token_metadata_key
    for k, v in metadata:
        if k == key or k.lower() == key:
            return bearer_token(v)
    return None


# Metadata value -> its token, for a client that sends the same value object call after call: the token then comes
# back as the same string object, whose hash Python keeps, so the facts' look-up below costs no hashing of the token.
_BEARERS_MAX = 256
_BEARER_SLACK = 64  # "Bearer " and surrounding spaces
_bearers: dict[str | bytes, str] = {}


def bearer_token(value: str | bytes) -> str:
    """:func:`bearer_value`, remembered per metadata value (bounded like the facts; values longer than a token
    jitrace would parse are not kept)."""
    token = _bearers.get(value)
    if token is None:
        token = bearer_value(value)
        if len(value) <= _settings.get().max_token_bytes + _BEARER_SLACK:
            if len(_bearers) >= _BEARERS_MAX:
                _bearers.clear()
            _bearers[value] = token
    return token


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


def token_facts(token: str | None, now_s: float | None = None) -> dict[str, Any]:
    """:func:`token_attributes`, parsed once per token; age and ttl at ``now_s``. A new dict each call."""
    static, dynamic = token_facts_split(token, now_s)
    return {**static, **dynamic}


def token_facts_split(token: str | None, now_s: float | None = None) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """:func:`token_facts` in two parts: the facts that do not change with time (one mapping per token, shared: not
    to be changed) and a new dict with the age and ttl at ``now_s``, so the first is written to a span without a
    copy (``_span_attrs.set_attributes(span, dynamic, base=static)``)."""
    now_s = time.time() if now_s is None else now_s
    settings = _settings._current  # noqa: SLF001 - see _settings
    if not token:
        return _ABSENT, {c.TOKEN_PRESENT: False}
    hit = _facts.get(token) if settings is _facts_settings[0] else None
    if hit is None:
        if len(token) > settings.max_token_bytes:  # refused (counted) each time, not kept
            return _ABSENT, token_attributes(token, now_s)
        if settings is not _facts_settings[0]:
            _facts.clear()
            _bearers.clear()
            _facts_settings[0] = settings
        attrs = token_attributes(token, now_s)
        # age and ttl are worked out per call, from the iat and exp claims (when they are numbers)
        iat = attrs[c.TOKEN_IAT] if attrs.pop(c.TOKEN_AGE_S, None) is not None else None
        exp = attrs[c.TOKEN_EXP] if attrs.pop(c.TOKEN_TTL_S, None) is not None else None
        hit = (attrs, iat, exp)
        if len(_facts) >= _FACTS_MAX:
            _facts.clear()
        _facts[token] = hit
    static, iat, exp = hit
    dynamic: dict[str, Any] = {}
    if iat is not None:
        dynamic[c.TOKEN_AGE_S] = now_s - iat
    if exp is not None:
        dynamic[c.TOKEN_TTL_S] = exp - now_s
    return static, dynamic
