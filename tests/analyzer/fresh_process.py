"""An analysis in an interpreter of its own: what a user's `jitrace analyze` imports, not what the test run has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def analysis_in_fresh_process(inputs: Path, out: Path, watched: tuple[str, ...]) -> tuple[dict, set[str]]:
    """Analyze ``inputs`` into ``out`` in a new Python process; its summary, and which ``watched`` modules it
    imported."""
    code = ("import json, sys; from jitrace.analyzer.analyze import analyze; "
            f"s = analyze([{str(inputs)!r}], {str(out)!r}, quiet=True); "
            f"print(json.dumps([s, [m for m in {list(watched)!r} if m in sys.modules]]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    summary, imported = json.loads(run.stdout.splitlines()[-1])
    return summary, set(imported)
