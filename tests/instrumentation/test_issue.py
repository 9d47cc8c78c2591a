"""Token issuance: a ``jit.issue`` span with the token's id, claims and grant window, never the token."""

from __future__ import annotations

import time
from typing import Any

import pytest
from opentelemetry import trace

from jitrace.instrumentation import _settings
from jitrace.instrumentation import contract as c
from jitrace.instrumentation._issue import record_issue
from jitrace.instrumentation._settings import Settings


def test_issue_span_is_a_child_with_claims_and_grant(exporter: Any, mint: Any) -> None:
    now = int(time.time())
    token = mint(jti="tok-issued", sub="carol", grant_id="g-77", grant_start=now, grant_end=now + 900)
    with trace.get_tracer("test").start_as_current_span("approve-grant") as parent:
        record_issue(token)
    issue = next(s for s in exporter.get_finished_spans() if s.name == c.ISSUE_SPAN_NAME)
    assert issue.parent is not None and issue.parent.span_id == parent.get_span_context().span_id
    a = issue.attributes
    assert a[c.TOKEN_ID] == "tok-issued" and a[c.TOKEN_SUB] == "carol"
    assert a[c.TOKEN_EXP] == now + 300 and a[c.TOKEN_IAT] == now
    assert (a[c.GRANT_ID], a[c.GRANT_START], a[c.GRANT_END]) == ("g-77", now, now + 900)
    for value in a.values():  # the token, or any of its parts, is nowhere
        text = str(value)
        assert token not in text and not any(part in text for part in token.split(".") if len(part) > 8)


def test_grant_arguments_override_claims_and_tokens_without_jti_get_a_hash(exporter: Any, mint: Any) -> None:
    token = mint(jti=None, grant_id=None, grant_start=None, grant_end=None)
    record_issue(token.encode(), grant_id="g-outside", grant_start=100.0, grant_end=200.0)
    (issue,) = [s for s in exporter.get_finished_spans() if s.name == c.ISSUE_SPAN_NAME]
    a = issue.attributes
    assert len(a[c.TOKEN_ID]) == 16 and a[c.TOKEN_ID] not in token
    assert (a[c.GRANT_ID], a[c.GRANT_START], a[c.GRANT_END]) == ("g-outside", 100.0, 200.0)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", None, 42])
def test_odd_tokens_never_raise(exporter: Any, token: Any) -> None:
    record_issue(token, grant_id="g")
    assert all(s.name == c.ISSUE_SPAN_NAME for s in exporter.get_finished_spans())


def test_disabled_records_nothing(exporter: Any, mint: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_settings, "_current", Settings(enabled=False))
    record_issue(mint())
    assert not exporter.get_finished_spans()
