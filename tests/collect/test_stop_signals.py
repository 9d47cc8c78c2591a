"""A stop signal always stops ``jitrace collect`` and the lab's services, whenever it lands (``StopSignals``)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

# The loop a receiver runs, at its tightest: the signal lands at any bytecode of `wait`. A threading.Event set from
# the handler hung in 14 of 20 such runs (the handler waits on the lock the interrupted `Event.wait` holds).
BUSY = """
from jitrace.collect.stop_signals import StopSignals
stop = StopSignals()
print("ready", flush=True)
while not stop.wait(0.0):
    pass
print("stopped by", stop.received, flush=True)
"""

# One 60 s wait: the signal must end it, not the timeout, even when it comes before the select starts.
LONG = """
import time
from jitrace.collect.stop_signals import StopSignals
stop = StopSignals()
print("ready", flush=True)
started = time.monotonic()
print(stop.wait(60), time.monotonic() - started, flush=True)
"""


def _run_until_signalled(code: str, sig: signal.Signals, delay_s: float) -> str:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay_s)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"still running 10 s after {sig.name}")
    assert proc.returncode == 0
    return out.strip()


def test_a_signal_at_any_moment_of_the_wait_loop_stops_it():
    rng = random.Random(3)
    for _ in range(20):
        sig = rng.choice([signal.SIGTERM, signal.SIGINT])
        assert _run_until_signalled(BUSY, sig, rng.uniform(0, 0.02)) == f"stopped by {sig.value}"


@pytest.mark.parametrize("delay_s", [0.0, 0.3])
def test_a_signal_ends_a_long_wait_at_once(delay_s):
    arrived, waited_s = _run_until_signalled(LONG, signal.SIGTERM, delay_s).split()
    assert arrived == "True" and float(waited_s) < 5  # woken by the signal, far from the 60 s timeout
