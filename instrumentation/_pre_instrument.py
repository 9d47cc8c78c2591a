"""The ``opentelemetry_pre_instrument`` entry point: hook the channel constructors before any instrumentor runs.

``opentelemetry-instrument`` calls every pre-instrument hook before loading instrumentors, and calls it whatever
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` says, so this hook checks that variable (and ``JITRACE_ENABLED``) itself.
(jitrace's hooks place themselves inside OpenTelemetry's in either order; hooking first is the belt to those braces.)
"""

from __future__ import annotations

import os
from typing import Any

from jitrace.instrumentation import _safety, _settings

ENTRY_POINT_NAME = "jitrace"


def disabled_by_environment(env: dict[str, str] | None = None) -> bool:
    """True when ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names jitrace (or ``*``) or ``JITRACE_ENABLED`` is false."""
    env = os.environ if env is None else env
    names = {n.strip() for n in env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    return ENTRY_POINT_NAME in names or "*" in names or not _settings.get().enabled


def pre_instrument(**kwargs: Any) -> None:
    if disabled_by_environment():
        return
    with _safety.guard("pre_instrument"):
        from jitrace.instrumentation import _hooks

        _hooks.patch_client()
