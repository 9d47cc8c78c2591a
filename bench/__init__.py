"""Benchmarks behind ``make bench``: each ``bench/bench_*.py`` measures one thing, side by side in one run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generate_apart(module: str, data: Path, n: int) -> float:
    """``bench.<module>.generate(data, n)`` in a child process, and the seconds it took: the generator's memory must
    not count as the measured children's (Linux keeps a process's peak RSS across fork and exec)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    f"from bench.{module} import generate; generate(Path(sys.argv[1]), int(sys.argv[2]))",
                    str(data), str(n)], check=True, cwd=ROOT, stdout=sys.stderr)
    return time.perf_counter() - started


def run_child(script: str, *args: str, what: str, timeout: float = 7200) -> dict:
    """``script`` in a child Python (from the repository's root) with ``args``; its result is the JSON object on its
    last line of stdout. A failed child raises with the end of its stderr, named ``what``."""
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"{what} child failed: {run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])
