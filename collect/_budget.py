"""A bounded in-flight budget: past capacity the receiver pushes back instead of queueing without end or dropping.

Every request holds its decompressed size from decoding until its batch is durably written. One that would take
the total past the limit is refused at once with the protocol's throttling answer (OTLP spec, "Throttling"):
gRPC RESOURCE_EXHAUSTED with a ``google.rpc.RetryInfo``, HTTP 503 with ``Retry-After``. The exporter retries it
later: nothing is acknowledged that is not stored, and nothing is dropped silently.
"""

from __future__ import annotations

import threading

DEFAULT_IN_FLIGHT_BYTES = 64 * 1024 * 1024
RETRY_AFTER_S = 1


class Busy(Exception):
    """The receiver is at capacity: the exporter should retry after ``RETRY_AFTER_S``."""


class Budget:
    def __init__(self, limit_bytes: int = DEFAULT_IN_FLIGHT_BYTES) -> None:
        self.limit = limit_bytes
        self.used = 0
        self.refused = 0
        self._lock = threading.Lock()

    def acquire(self, n: int) -> None:
        """Take ``n`` bytes or raise Busy; a request alone larger than the limit is let through when nothing else
        is in flight (else it could never pass; the per-request size limit bounds it)."""
        with self._lock:
            if self.used and self.used + n > self.limit:
                self.refused += 1
                raise Busy(f"receiver at capacity ({self.used} bytes in flight); retry in {RETRY_AFTER_S} s")
            self.used += n

    def release(self, n: int) -> None:
        with self._lock:
            self.used -= n
