"""SIGTERM and SIGINT as a request to stop, waited for without a lock: ``jitrace collect`` and the lab's services.

A ``threading.Event`` set from a signal handler can hang the process for good. Python runs the handler in the main
thread between two bytecodes; if those are inside ``Event.wait()`` while it holds the Event's own lock, the handler's
``set()`` waits on that lock, which the main thread will never release. A ``collect --workers`` child whose parent
was killed stayed that way once in 150 runs under load. Here the handler only stores the signal's number, and
``signal.set_wakeup_fd`` has the C-level handler write a byte to a pipe that ``wait`` selects on: a signal that
comes between the check and the select still wakes it. ``select``, not ``time.sleep``: under libfaketime
``time.sleep`` fails with EINVAL (docs/contract.md, Pitfalls).
"""

from __future__ import annotations

import os
import select
import signal

__all__ = ["StopSignals"]


class StopSignals:
    """Installs handlers for ``signals`` (main thread only); ``wait`` returns True once one of them arrived."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.received: int | None = None
        self._read, write = os.pipe()
        for fd in (self._read, write):
            os.set_blocking(fd, False)  # the C-level handler must never block on a full pipe
        signal.set_wakeup_fd(write)
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until a stop signal; True if one has arrived (now or before)."""
        if self.received is None:
            ready, _, _ = select.select([self._read], [], [], timeout)
            if ready:
                os.read(self._read, 4096)  # the pipe only wakes the select; the handler set `received`
        return self.received is not None
