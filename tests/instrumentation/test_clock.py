"""The in-band clock estimate: NTP's four-timestamp math, and a ``jit-clock`` parser that never raises."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jitrace.instrumentation import _clock

NS = 1_000_000_000
T0 = 1_750_000_000 * NS


@given(
    offset_ns=st.integers(-3600 * NS, 3600 * NS),
    out_ns=st.integers(0, 2 * NS),
    back_ns=st.integers(0, 2 * NS),
    work_ns=st.integers(0, 5 * NS),
)
def test_ntp_recovers_the_offset_within_half_the_path_asymmetry(offset_ns, out_ns, back_ns, work_ns):
    """Server clock = client clock + offset; the request takes out_ns, the server works work_ns, the reply back_ns."""
    t1 = T0
    t2 = t1 + out_ns + offset_ns  # server clock on arrival
    t3 = t2 + work_ns
    t4 = t1 + out_ns + work_ns + back_ns  # client clock when the reply arrived
    offset_s, delay_s = _clock.ntp(t1, t2, t3, t4)
    assert abs(delay_s - (out_ns + back_ns) / NS) < 1e-6  # the network time, without the server's work
    assert abs(offset_s - offset_ns / NS) <= abs(out_ns - back_ns) / 2 / NS + 1e-6


def test_ntp_symmetric_paths_give_the_exact_offset():
    offset_s, delay_s = _clock.ntp(T0, T0 + 5 * NS + 1000, T0 + 5 * NS + 3000, T0 + 4000)
    assert offset_s == 5.0 and delay_s == 2000 / NS


@given(t2=st.integers(1, 2**62), gap=st.integers(0, 2**40))
def test_parse_round_trip(t2, gap):
    assert _clock.parse_clock(f"{t2},{t2 + gap}") == (t2, t2 + gap)
    assert _clock.parse_clock(f"{t2},{t2 + gap}".encode()) == (t2, t2 + gap)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), st.none()))
def test_parse_never_raises(value):
    result = _clock.parse_clock(value)
    assert result is None or (isinstance(result, tuple) and result[0] <= result[1])


def test_parse_rejects_what_is_not_a_clock():
    for value in ("", "1", "1,2,3", "a,b", "5,4", "-1,3", "0,0", "1," + "9" * 100, b"\xff\xfe", " , "):
        assert _clock.parse_clock(value) is None, value
