"""In-band clock estimate (NTP's four timestamps), from the client's ``jit-sent-ns`` and the server's ``jit-clock``.

t1 = client wall clock when the call left, t2 = server wall clock on arrival, t3 = server wall clock when the reply
left, t4 = client wall clock when the response/status arrived. All in nanoseconds of each host's own wall clock.
"""

from __future__ import annotations

_MAX_LEN = 64  # two int64 in decimal and a comma fit in 41 characters; anything longer is not ours
_MAX_NS = 2**63 - 1  # wall-clock nanoseconds fit an int64


def parse_clock(value: str | bytes | None) -> tuple[int, int] | None:
    """``(t2, t3)`` from a ``jit-clock`` value ``"<t2_ns>,<t3_ns>"``; None for anything else (never raises)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if len(value) > _MAX_LEN:
        return None
    first, sep, second = value.strip().partition(",")
    # plain ASCII decimals only: int() would also take signs, spaces, underscores and other scripts' digits
    if not sep or not (first.isascii() and first.isdigit() and second.isascii() and second.isdigit()):
        return None
    t2, t3 = int(first), int(second)
    if t2 <= 0 or t3 < t2 or t3 > _MAX_NS:  # the reply cannot leave before the request arrived
        return None
    return t2, t3


def ntp(t1: int, t2: int, t3: int, t4: int) -> tuple[float, float]:
    """``(offset_s, delay_s)``: offset = server clock - client clock = ((t2-t1)+(t3-t4))/2; delay = (t4-t1)-(t3-t2)."""
    offset_ns = ((t2 - t1) + (t3 - t4)) / 2
    delay_ns = (t4 - t1) - (t3 - t2)
    return offset_ns / 1e9, delay_ns / 1e9
