"""Which processes are still running: tests that start servers check that none is left behind."""

from __future__ import annotations

import os
from pathlib import Path


def processes_mentioning(text: str) -> list[str]:
    """Command lines of this machine's processes (other than the test's own) that contain ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        if text in line and cmdline.parent.name != str(os.getpid()):
            found.append(line)
    return found
