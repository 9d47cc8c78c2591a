"""jitrace's own settings, read from ``JITRACE_*`` environment variables.

Each field of :class:`Settings` is the variable ``JITRACE_<FIELD>``; README.md documents them all in one table
(service and analyzer settings together), so a new field goes there too. A value that does not parse keeps the
default, with a one-line warning naming it: a typo in a setting must not take a service down.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, fields, replace

_FALSE = {"0", "false", "no", "off", ""}
_log = logging.getLogger("jitrace.instrumentation")
_SHOWN = 64  # characters of a bad value quoted in the warning
_NOT_NEGATIVE = {"clock_stamp_interval_s"}
_KINDS = {"clock_stamp_interval_s": "number of seconds >= 0", "refresh_before_s": "number of seconds"}


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    token_metadata_key: str = "authorization"
    hash_subject: bool = False
    refresh_before_s: float = 60.0
    max_token_bytes: int = 8192
    max_attribute_chars: int = 256
    clock_stamps: bool = True
    # a client sends jit-sent-ns on at most one call per target per this many seconds (0: every call)
    clock_stamp_interval_s: float = 1.0
    # the policy id and revision recorded with pycasbin decisions when the enforcer does not name them
    policy_id: str = ""
    policy_version: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``JITRACE_<FIELD>`` variables; a value that does not parse keeps the default.
        OpenTelemetry's ``OTEL_SDK_DISABLED=true`` switches jitrace off too: no SDK, nothing to record on."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"JITRACE_{f.name.upper()}")
            if raw is None:
                continue
            default = f.default
            try:
                if isinstance(default, bool):
                    values[f.name] = raw.strip().lower() not in _FALSE
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    number = float(raw)
                    if not math.isfinite(number) or (f.name in _NOT_NEGATIVE and number < 0):
                        raise ValueError(raw)
                    values[f.name] = number
                else:
                    values[f.name] = raw.strip().lower() if f.name == "token_metadata_key" else raw
            except ValueError:
                shown = raw if len(raw) <= _SHOWN else raw[:_SHOWN] + "..."
                _log.warning("jitrace: JITRACE_%s=%r is not a valid %s; using the default %r", f.name.upper(),
                             shown, _KINDS.get(f.name, type(default).__name__), default)
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            values["enabled"] = False
        return replace(cls(**values), **overrides)  # type: ignore[arg-type]

# The settings in force. configure() replaces the object, never changes it, so the per-call paths read this module
# attribute directly (``_settings._current``: an attribute read where get() is a call).
_current = Settings.from_env()


def get() -> Settings:
    return _current


def configure(settings: Settings) -> None:
    global _current
    _current = settings
