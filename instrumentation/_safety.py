"""The instrumentation never breaks a call: its own failures are caught here, counted, and logged without data."""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

_log = logging.getLogger("jitrace.instrumentation")
_lock = threading.Lock()
_failures: Counter[str] = Counter()

P = ParamSpec("P")
R = TypeVar("R")


def count(kind: str) -> None:
    """Count one of jitrace's own failures (or a refusal, such as an oversized token)."""
    with _lock:
        _failures[kind] += 1


def failure_counts() -> dict[str, int]:
    """jitrace's own failures so far, by kind (e.g. ``server_interceptor``, ``token_too_large``)."""
    with _lock:
        return dict(_failures)


@contextmanager
def guard(kind: str) -> Iterator[None]:
    """Run a block of jitrace's own work; an exception there is counted and swallowed, never raised into the call.

    Only the exception's type is logged: its message could quote a token.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - by design: nothing of ours may fail a call
        count(kind)
        _log.debug("jitrace: %s failed (%s); the call goes on", kind, type(exc).__name__)


def guarded(kind: str, default: R | None = None) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Decorator form of :func:`guard`: the function returns ``default`` when it fails."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R | None]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                count(kind)
                _log.debug("jitrace: %s failed (%s); the call goes on", kind, type(exc).__name__)
                return default

        return inner

    return wrap
