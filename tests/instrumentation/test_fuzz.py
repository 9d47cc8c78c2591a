"""Coverage-guided fuzzing (atheris) of the wire parsers: the token facts, the ``jit-clock`` echo, the ``jit-sent-ns``
stamp. A bounded number of runs per target in a subprocess (libFuzzer exits the process it runs in)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import HERE

# atheris is in requirements.lock: where it is missing, the fuzz targets fail to start (no skip hides it)

RUNS = {"token": 20000, "clock": 50000, "stamp": 50000}


@pytest.mark.parametrize("target", sorted(RUNS))
def test_fuzz_target(target: str, tmp_path) -> None:
    run = subprocess.run([sys.executable, str(HERE / "fuzz_targets.py"), target, f"-runs={RUNS[target]}",
                          "-max_len=2048", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
