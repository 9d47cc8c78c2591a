"""Token issuance: a ``jit.issue`` span for a JIT grant approved and its token minted.

The analyzer ties tokens seen on calls back to their origin through ``jit.token.id``. The span carries the token's
id, claims and grant window, never the token.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from jitrace.instrumentation import _safety, _settings, _token
from jitrace.instrumentation import contract as c

_TRACER_NAME = "jitrace.instrumentation"


@_safety.guarded("issue")
def record_issue(token: str | bytes, *, grant_id: str | None = None, grant_start: float | None = None,
                 grant_end: float | None = None) -> None:
    """Emit a ``jit.issue`` span (a child of the current span) for a freshly minted ``token``.

    The grant window comes from the token's ``grant_*`` claims; the keyword arguments, when given, take precedence
    (for issuers that keep the grant out of the token). Does nothing when jitrace is disabled; never raises.
    """
    if not _settings.get().enabled:
        return
    if isinstance(token, bytes | bytearray):
        token = bytes(token).decode("latin-1")
    attrs: dict[str, Any] = dict(_token.token_attributes(token if isinstance(token, str) else None))
    attrs.update(_token.grant_attributes({"grant_id": grant_id, "grant_start": grant_start, "grant_end": grant_end}))
    attrs.pop(c.TOKEN_PRESENT, None)
    tracer = trace.get_tracer(_TRACER_NAME)
    with tracer.start_as_current_span(c.ISSUE_SPAN_NAME, kind=trace.SpanKind.INTERNAL, attributes=attrs):
        pass
