"""``make demo`` on a machine without the system's libfaketime, twice in a row in the same clone: the lab takes the
preload library the PyPI package ships, and the second run replaces the first one's output (a failed or finished
run used to leave a folder the next refused).

The system library is hidden by a mount namespace: an empty read-only tmpfs over each folder it may live in. That
needs root, as CI has."""

from __future__ import annotations

import glob
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_demo_passes_twice_with_the_system_libfaketime_hidden() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: a mount namespace hides the system libfaketime")
        pytest.skip("hiding the system libfaketime needs a mount namespace (root)")
    hidden = sorted(glob.glob("/usr/lib/*/faketime") + glob.glob("/usr/lib/faketime"))
    masks = "".join(f"mount -t tmpfs -o ro tmpfs {folder}; " for folder in hidden)
    script = f"set -e; {masks}ls /usr/lib/*/faketime/ 2>/dev/null | wc -l; make -s demo; make -s demo"
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.splitlines()[0] == "0"  # nothing left of the system's library
    runs = result.stdout.split("jitrace demo: running")[1:]
    assert len(runs) == 2
    for run in runs:
        library = re.search(r"clock skew through (\S+)", run)
        assert library and "site-packages/libfaketime/" in library.group(1), run[:500]
        assert "accuracy 1.000 over 40 calls" in run
    assert (ROOT / "jitrace-demo" / "report.html").is_file()
