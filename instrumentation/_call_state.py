"""The server call being handled right now, so that hooks deep inside a handler (PyJWT, the policy API) find its span.

The state lives in a ``contextvars.ContextVar``. Sync gRPC runs each handler on a thread-pool thread, so the server
interceptor sets the state *inside* the handler invocation (it wraps the handler's behaviour), never in
``intercept_service``; aio handlers run in a task of their own, so the same holds there. Code the handler hands off
to another thread (an executor, a new thread) does not see the state: its checks are not recorded.
"""

from __future__ import annotations

import contextvars
import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar

from opentelemetry.trace import Span

from jitrace.instrumentation import contract as c

# One lock for every call's counters: held for a few instructions, it costs less than a lock made per call. (The
# PyJWT hook takes it too, to count a token check: ``_jwt_hook._record``.)
_lock = threading.Lock()


@dataclass(slots=True)
class CallState:
    """What jitrace knows about one server call while its handler runs.

    Its facts go on the span as the hooks find them; a server call of jitrace's own interceptor (``_server``'s
    subclass, ``defers``) keeps them and writes them once, when the reply leaves (``flush``).
    """

    defers: ClassVar[bool] = False

    span: Span
    arrival_ns: int  # the OpenTelemetry server span's start (the outermost interceptor's arrival), wall clock ns
    # The bearer token from metadata, kept in memory for the length of the call only so the PyJWT hook can tell
    # whether it checks that same token (then only the verdict, age and ttl change). Never put on a span.
    metadata_token: str | None = field(default=None, repr=False)
    token_iat: float | None = None  # that token's iat and exp claims (for age and ttl at its check)
    token_exp: float | None = None
    checks: int = 0  # token checks (jwt decodes) so far
    first_check_ns: int | None = None  # the first access check (token or policy), wall clock ns
    policy_decisions: int = 0
    policy_denied: bool = False

    def mark_check(self, started_ns: int | None = None) -> dict[str, float]:
        """An access check started at ``started_ns``: for the first one, ``{jit.auth.wait_s: ...}`` to put on the
        span (the caller sets it along with its own attributes: one call into the SDK), else ``{}``."""
        started_ns = time.time_ns() if started_ns is None else started_ns
        with _lock:
            if self.first_check_ns is not None and self.first_check_ns <= started_ns:
                return {}
            self.first_check_ns = started_ns
        return {c.AUTH_WAIT_S: max(0.0, (started_ns - self.arrival_ns) / 1e9)}

    def flush(self) -> None:
        """Put on the span what is kept for it: nothing here (see the class's docstring)."""

    def note_decision(self, denied: bool) -> bool:
        """Count a policy decision; True if it should be the one on the span: the first, or the first deny."""
        with _lock:
            replace = self.policy_decisions == 0 or (denied and not self.policy_denied)
            self.policy_decisions += 1
            self.policy_denied = self.policy_denied or denied
            return replace


_current: contextvars.ContextVar[CallState | None] = contextvars.ContextVar("jitrace_server_call", default=None)


def current() -> CallState | None:
    """The server call whose handler runs in this context, else None."""
    return _current.get()


def activate(state: CallState) -> contextvars.Token[CallState | None]:
    return _current.set(state)


def deactivate(token: contextvars.Token[CallState | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:
        # a response generator closed from another context (e.g. a cancelled stream): nothing of ours to restore
        _current.set(None)
