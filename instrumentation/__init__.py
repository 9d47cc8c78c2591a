"""jitrace instrumentation: JIT-access facts on every gRPC span.

Importing this package is cheap and needs neither grpc nor the OpenTelemetry SDK; the instrumentor loads them
when it is used. See README.md for the ``JITRACE_*`` settings.

Public API (each name is imported on first use, so ``import jitrace.instrumentation.contract`` stays grpc-free):

- ``JitraceInstrumentor``: the OpenTelemetry ``BaseInstrumentor`` (entry point ``opentelemetry_instrumentor``).
- ``instrument(**overrides)`` / ``uninstrument()``: the programmatic switch; overrides are ``Settings`` fields.
- ``record_policy_decision(...)``, ``record_issue(...)``: facts a service reports itself.
- ``bearer_credentials(...)``, ``refreshing_credentials(...)``: call credentials whose token facts reach the span.
- ``failure_counts()``: jitrace's own failures, by kind (each one swallowed so the call went on).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from jitrace.instrumentation._credentials import bearer_credentials, refreshing_credentials
    from jitrace.instrumentation._instrumentor import JitraceInstrumentor, instrument, uninstrument
    from jitrace.instrumentation._issue import record_issue
    from jitrace.instrumentation._policy import record_policy_decision
    from jitrace.instrumentation._safety import failure_counts

# public name -> the private module that defines it
_EXPORTS: dict[str, str] = {
    "JitraceInstrumentor": "_instrumentor",
    "instrument": "_instrumentor",
    "uninstrument": "_instrumentor",
    "record_policy_decision": "_policy",
    "record_issue": "_issue",
    "bearer_credentials": "_credentials",
    "refreshing_credentials": "_credentials",
    "failure_counts": "_safety",
}

__all__ = [
    "JitraceInstrumentor",
    "bearer_credentials",
    "failure_counts",
    "instrument",
    "record_issue",
    "record_policy_decision",
    "refreshing_credentials",
    "uninstrument",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
