"""Processes for tests and the bench: which are still running (tests that start servers check that none is left
behind), and ``jitrace collect`` started on ports the system picks. The bench imports this module as
``tests.processes`` (it runs from the repository's root)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from pathlib import Path

JITRACE = Path(sys.executable).parent / "jitrace"
# the receiver's ready line on stderr: "jitrace collect: listening grpc=HOST:PORT http=HOST:PORT (N processes), ..."
_READY = re.compile(r"grpc=(?:[^\s:]+:(\d+)|off) http=(?:[^\s:]+:(\d+)|off)")


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


def start_collect(out: Path, *options: str, stdout: int | None = subprocess.DEVNULL, text: bool = True,
                  timeout: float = 60.0) -> tuple[subprocess.Popen, int | None, int | None, str]:
    """``jitrace collect --out OUT`` on loopback, both ports picked by the system (``options`` come last, so
    ``--http off`` switches one off): the process, its gRPC and HTTP ports (None where off) and its ready line.
    Raises (the process killed) if it has not said it listens within ``timeout`` seconds."""
    proc = subprocess.Popen([str(JITRACE), "collect", "--out", str(out), "--grpc", "127.0.0.1:0", "--http",
                             "127.0.0.1:0", *options], stdout=stdout, stderr=subprocess.PIPE, text=text)
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    raw = proc.stderr.readline() if ready else ""
    line = raw.decode() if isinstance(raw, bytes) else raw
    m = _READY.search(line)
    if m is None:
        proc.kill()
        raise RuntimeError(f"jitrace collect did not start: {line!r}")
    grpc_port, http_port = (int(g) if g else None for g in m.groups())
    return proc, grpc_port, http_port, line
