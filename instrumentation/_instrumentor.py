"""The OpenTelemetry instrumentor: what ``opentelemetry-instrument`` (or ``instrument()``) switches on."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from jitrace.instrumentation import _safety, _settings

_INSTRUMENTS = ("grpcio >= 1.60",)
_log = logging.getLogger("jitrace.instrumentation")


def _call_hook(module: str, function: str) -> None:
    """Run a library hook (PyJWT, pycasbin): skipped when the library is not installed, counted when it fails."""
    try:
        getattr(importlib.import_module(f"jitrace.instrumentation.{module}"), function)()
    except ImportError:
        _log.debug("jitrace: %s.%s skipped (a library is not installed)", module, function)
    except Exception as exc:  # noqa: BLE001 - a hook that fails must not stop the service
        _safety.count(f"{module.lstrip('_')}")
        _log.debug("jitrace: %s.%s failed (%s)", module, function, type(exc).__name__)


class JitraceInstrumentor(BaseInstrumentor):
    """Puts JIT-access facts (``jit.*``) on OpenTelemetry's gRPC spans.

    Hooks grpc's channel and server constructors (jitrace's interceptors run inside OpenTelemetry's, whichever
    instrumentor runs first), PyJWT's ``decode`` and pycasbin's ``Enforcer.enforce``. Does nothing when
    ``JITRACE_ENABLED`` is false. Only channels and servers created after ``instrument()`` are covered.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        if not _settings.get().enabled:
            return
        from jitrace.instrumentation import _hooks

        _hooks.patch_client()
        _hooks.patch_server()
        _call_hook("_jwt_hook", "patch")
        _call_hook("_policy", "patch_casbin")

    def _uninstrument(self, **kwargs: Any) -> None:
        from jitrace.instrumentation import _hooks

        _hooks.unpatch()
        _call_hook("_jwt_hook", "unpatch")
        _call_hook("_policy", "unpatch_casbin")


def instrument(**overrides: Any) -> None:
    """Switch jitrace on for code that sets OpenTelemetry up itself.

    ``overrides`` are :class:`Settings` fields (``instrument(hash_subject=True)``) on top of the ``JITRACE_*``
    environment. Call it before creating channels and servers; OpenTelemetry's gRPC instrumentors may run before or
    after it.
    """
    if overrides:
        _settings.configure(_settings.Settings.from_env(**overrides))
    JitraceInstrumentor().instrument()


def uninstrument() -> None:
    """Switch jitrace off: channels and servers created from now on carry no jitrace interceptors."""
    JitraceInstrumentor().uninstrument()
