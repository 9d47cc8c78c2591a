"""What makes a write durable, shared by the writer and compaction: write under a temporary name, fsync, rename,
fsync the folder. Loaders skip the temporary name, so a crash never leaves half a file that counts."""

from __future__ import annotations

import os
from pathlib import Path

TMP_SUFFIX = ".tmp"


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by name (a folder: so that a rename in it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
