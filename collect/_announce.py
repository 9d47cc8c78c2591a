"""The receivers' side of ``jitrace collect --watch``: start the watch process and announce each durable file to it.

Kept apart from ``watch`` (DuckDB, numpy): a receiver process imports only this, so its memory and its garbage
collector's work stay what they are without ``--watch``. One line per file on the watch process's stdin pipe, each a
single ``write`` shorter than PIPE_BUF, so the lines of several receiver processes never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import subprocess
import sys
from pathlib import Path

from jitrace.analyzer import rule_options
from jitrace.analyzer.errors import UserError
from jitrace.collect._writer import OnCommit

NICE = 19  # the watch process's CPU priority: the lowest, below the receivers'


def announcement(kind: str, path: Path, rows: int, acked: float) -> bytes:
    """The line a receiver process writes on the watch process's pipe for each durable file (one ``write``, shorter
    than PIPE_BUF for any sane path: the lines of several receivers never interleave)."""
    return f"file\t{kind}\t{rows}\t{acked!r}\t{path}\n".encode(errors="surrogateescape")


def parse_announcement(line: bytes) -> tuple[str, str, int, float] | None:
    parts = line.decode(errors="surrogateescape").rstrip("\n").split("\t", 4)
    if len(parts) != 5 or parts[0] != "file":
        return None
    try:
        return parts[1], parts[4], int(parts[2]), float(parts[3])
    except ValueError:
        return None


def announcer(fd: int) -> OnCommit:
    """A receiver's ``on_commit`` under ``--watch``: one announcement line per file on the watch process's pipe."""
    def say(kind: str, path: Path, rows: int, acked: float) -> None:
        # the watch gone (it said why on stderr), the batch is durable all the same
        with contextlib.suppress(OSError):
            os.write(fd, announcement(kind, path, rows, acked))
    return say


WATCH_START_S = 60.0
PIPE_BYTES = 1 << 20  # Linux's default most for an unprivileged process (/proc/sys/fs/pipe-max-size)


class WatchProcess:
    """The parent's handle on the watch process: ``fd`` (the announcements' pipe), ``prometheus_port``, ``stop``."""

    def __init__(self, proc: subprocess.Popen, fd: int, prometheus_port: int | None) -> None:
        self.proc, self.fd, self.prometheus_port = proc, fd, prometheus_port

    def stop(self, timeout_s: float = 600.0) -> None:
        """Close the pipe (every receiver has stopped writing to it): the watch loads the rest, runs its last clock
        model and tick, says its stop line and exits."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_process(args) -> WatchProcess:
    """Start the watch in a process of its own (its DuckDB work and its Python never hold up a receiver's: no shared
    GIL, and a lower CPU priority), reading announcements on a pipe, its lines on this process's stdout. Returns
    once it serves its metrics; a metrics address it cannot take is a UserError here."""
    read_fd, write_fd = os.pipe()
    # a receiver's write blocks once the pipe is full: room for minutes of announcements while the watch is behind
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    ready_r, ready_w = os.pipe()
    command = [sys.executable, "-m", "jitrace.analyzer.cli", "collect", "--out", str(args.out),
               "--watch", "--watch-process", str(ready_w), "--watch-window", repr(args.watch_window),
               "--watch-max-spans", str(args.watch_max_spans), "--metrics-interval", repr(args.metrics_interval),
               *rule_options.command_line(args),
               *(["--metrics", args.metrics] if args.metrics else []),
               *(["--metrics-otlp", args.metrics_otlp] if args.metrics_otlp else [])]
    try:
        proc = subprocess.Popen(command, stdin=read_fd, pass_fds=(ready_w,))
    finally:
        os.close(read_fd)
        os.close(ready_w)
    with os.fdopen(ready_r, "rb") as ready:
        line = ready.readline().decode().strip() if select.select([ready], [], [], WATCH_START_S)[0] else ""
    what, _, rest = line.partition(" ")
    if what != "ready":
        os.close(write_fd)
        proc.kill()
        proc.wait()
        raise UserError(rest if what == "error" else
                        f"--watch: the watch process did not start within {WATCH_START_S:.0f} s")
    port = int(rest)
    return WatchProcess(proc, write_fd, port or None)
