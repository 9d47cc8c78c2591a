"""Token facts: right for real signed JWTs, never the token, never an exception whatever the input."""

from __future__ import annotations

import base64
import json
import math
import time

import jwt
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jitrace.instrumentation import _safety, _settings, _token
from jitrace.instrumentation import contract as c

SECRET = "test-secret-of-32-bytes-at-least!!"


def _mint(**claims) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_claims_age_ttl_and_grant_from_a_signed_jwt():
    now = time.time()
    token = _mint(sub="alice", iss="jit-issuer", aud=["orders", "billing"], iat=int(now) - 10, nbf=int(now) - 10,
                  exp=int(now) + 50, jti="tok-1", grant_id="g-9", grant_start=int(now) - 20, grant_end=int(now) + 600)
    attrs = _token.token_attributes(token, now_s=now)
    assert attrs[c.TOKEN_PRESENT] is True
    assert attrs[c.TOKEN_ID] == "tok-1"
    assert attrs[c.TOKEN_SUB] == "alice" and attrs[c.TOKEN_ISS] == "jit-issuer"
    assert attrs[c.TOKEN_AUD] == "orders,billing"
    assert abs(attrs[c.TOKEN_AGE_S] - (now - int(now) + 10)) < 1e-6
    assert abs(attrs[c.TOKEN_TTL_S] - (int(now) + 50 - now)) < 1e-6
    assert attrs[c.GRANT_ID] == "g-9" and attrs[c.GRANT_END] == int(now) + 600


def test_expired_token_has_negative_ttl_and_id_is_a_hash_without_jti():
    now = time.time()
    token = _mint(sub="bob", iat=int(now) - 100, exp=int(now) - 40)
    attrs = _token.token_attributes(token, now_s=now)
    assert attrs[c.TOKEN_TTL_S] < -39
    assert len(attrs[c.TOKEN_ID]) == 16 and attrs[c.TOKEN_ID] not in token


def test_bearer_prefix_and_custom_key():
    md = (("x-other", "1"), ("authorization", "Bearer abc.def.ghi"))
    assert _token.token_from_metadata(md) == "abc.def.ghi"
    assert _token.token_from_metadata((("x-token", "raw"),), key="x-token") == "raw"
    assert _token.token_from_metadata(()) is None


def test_oversized_token_is_counted_not_parsed():
    before = _safety.failure_counts().get("token_too_large", 0)
    attrs = _token.token_attributes("a." + "b" * 100_000 + ".c")
    assert attrs == {c.TOKEN_PRESENT: True, c.TOKEN_ID: attrs[c.TOKEN_ID]}
    assert _safety.failure_counts()["token_too_large"] == before + 1


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                 st.lists(st.text(max_size=40), min_size=3, max_size=3).map(".".join)))
def test_hostile_tokens_never_raise_and_never_leak(token):
    attrs = _token.token_attributes(token, now_s=1.0)
    if token:
        assert attrs[c.TOKEN_PRESENT] is True
    for value in attrs.values():
        if isinstance(value, str) and len(token) >= 8:
            assert token not in value
    _assert_clean(attrs)


def _assert_clean(attrs: dict) -> None:
    """What ``_span_attrs.set_attributes(..., clean=True)`` relies on: str keys, str/bool/int/finite float values,
    strings within the cap."""
    for key, value in attrs.items():
        assert type(key) is str and key
        assert type(value) in (str, bool, int, float), (key, value)
        assert type(value) is not float or math.isfinite(value), (key, value)
        assert type(value) is not str or len(value) <= _settings.get().max_attribute_chars, (key, value)


_claim = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=400),
                   st.lists(st.text(max_size=20), max_size=3), st.dictionaries(st.text(max_size=5), st.integers()))


@settings(max_examples=300, deadline=None)
@given(claims=st.dictionaries(st.sampled_from(["sub", "iss", "aud", "iat", "nbf", "exp", "jti", "grant_id",
                                               "grant_start", "grant_end", "other"]), _claim))
@example(claims={"exp": 10**400, "iat": -(10**400), "grant_end": 10**309})  # beyond any float: JSON allows it
def test_facts_of_any_claims_are_clean_values(claims):
    """A token's claims are the wire's: whatever they hold, its facts are values the SDK stores as they are."""
    payload = base64.urlsafe_b64encode(json.dumps(claims, default=str).encode()).decode().rstrip("=")
    token = f"eyJhbGciOiJub25lIn0.{payload}.sig"
    _assert_clean(_token.token_attributes(token, now_s=1.0))
    _assert_clean(_token.token_facts(token, now_s=2.0))


def test_token_facts_are_parsed_once_and_aged_per_call(monkeypatch):
    from jitrace.instrumentation import _settings

    token = _mint(jti="cached", sub="dora", iat=1_000, exp=2_000)
    first = _token.token_facts(token, now_s=1_500)
    parsed = []
    monkeypatch.setattr(_token, "token_attributes", lambda *a: parsed.append(a) or {})
    later = _token.token_facts(token, now_s=1_700.5)
    assert parsed == []  # served from the cache
    assert later[c.TOKEN_AGE_S] == 700.5 and later[c.TOKEN_TTL_S] == 299.5
    assert {k: v for k, v in later.items() if k not in (c.TOKEN_AGE_S, c.TOKEN_TTL_S)} == {
        k: v for k, v in first.items() if k not in (c.TOKEN_AGE_S, c.TOKEN_TTL_S)}
    monkeypatch.undo()
    # new settings (e.g. JITRACE_HASH_SUBJECT) are not served from facts parsed under the old ones
    monkeypatch.setattr(_settings, "_current", _settings.Settings(hash_subject=True))
    assert _token.token_facts(token, now_s=1_500)[c.TOKEN_SUB] == _token.hash_value("dora")


def test_token_facts_cache_is_bounded():
    for i in range(3 * _token._FACTS_MAX):
        _token.token_facts(_mint(jti=f"t-{i}", exp=2_000), now_s=1_500)
        assert len(_token._facts) <= _token._FACTS_MAX
    oversized = "x" * (8192 + 1)
    _token.token_facts(oversized, now_s=1_500)
    assert oversized not in _token._facts  # refused each time, never kept


def test_value_facts_are_the_token_facts_of_the_value(monkeypatch):
    """A metadata value's facts: its token and the shared part of the token's facts, with the claims its age and ttl
    come from; kept per value (not an oversized token: refused and counted each time); new settings not served
    from the old."""
    token = _mint(jti="by-value", sub="erin", iat=1_000, exp=2_000)
    for value in (f"Bearer {token}", f"  bearer  {token} ", token, f"Bearer {token}".encode()):
        found, static, iat, exp = _token.value_facts(value)
        assert found == token and (iat, exp) == (1_000, 2_000)
        assert {**static, **_token.aged(iat, exp, 1_500)} == _token.token_facts(token, now_s=1_500)
        assert _token.value_facts(value)[1] is static  # kept
        assert _token.value_facts(value[:1] + value[1:])[1] is static  # an equal value, a new object (servers')
    assert _token.value_facts("  ") == ("", _token.ABSENT_FACTS, None, None)
    oversized = "Bearer " + "x" * (8192 + 1)
    before = _safety.failure_counts().get("token_too_large", 0)
    for _ in range(2):
        assert _token.value_facts(oversized)[2:] == (None, None)
    assert _safety.failure_counts()["token_too_large"] == before + 2
    assert oversized not in _token._values
    monkeypatch.setattr(_settings, "_current", _settings.Settings(hash_subject=True))
    assert _token.value_facts(f"Bearer {token}")[1][c.TOKEN_SUB] == _token.hash_value("erin")
