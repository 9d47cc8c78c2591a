"""Inputs -> files: folders (recursive), globs and files, each file's bytes decompressed (gzip, zstd by magic)."""

from __future__ import annotations

import glob
import gzip
import io
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from jitrace.analyzer.errors import UserError

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, as some Windows tools write before the text
# Files a folder may hold that are not data: the receiver's in-progress writes, hidden files, notes.
_SKIP_SUFFIXES = (".tmp", ".md", ".txt", ".crc", ".lock")


def expand(inputs: list[str], *, follow_symlinks: bool = False, named: set[Path] | None = None) -> list[Path]:
    """Every file named by ``inputs``, in a stable order; a name matching nothing is a UserError. ``named`` gets the
    files named themselves (not found in a folder or by a pattern): of no known format, those are an error.

    A folder is read without what ``jitrace analyze`` (or ``replay``) writes: the output files an output folder's
    manifest lists, and a run's staging folder (hidden: an output inside the input folder, say ``analyze traces/
    --out traces/report``, is not read back while it is written). Other files in an output folder are inputs like any:
    ``jitrace demo`` keeps the lab's spans in ``DIR/lab``. A folder walk enters no
    symbolic link, to a file or a folder, unless ``follow_symlinks``: a link may lead anywhere (a link named on the
    command line was asked for and is read).
    """
    files: list[Path] = []
    written = _written_by_jitrace()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            root = p.resolve()
            found = sorted(f for f in _walk(p, follow_symlinks) if _is_data(f.relative_to(p))
                           and not written(root / f.relative_to(p)))
        elif p.is_file():
            found = [p]
            if named is not None:
                named.add(p)
        elif glob.has_magic(item):
            found = sorted(Path(f) for f in glob.glob(item, recursive=True) if os.path.isfile(f))
            if not found:
                raise UserError(f"{item}: no file matches this pattern")
        else:
            raise UserError(f"{item}: no such file or folder")
        files += found
    seen: set[Path] = set()
    return [f for f in files if not (f in seen or seen.add(f))]


def _walk(folder: Path, follow_symlinks: bool) -> Iterator[Path]:
    """Every file under ``folder``; symbolic links only with ``follow_symlinks``."""
    for dirpath, _, names in os.walk(folder, followlinks=follow_symlinks):
        for name in names:
            path = Path(dirpath) / name
            if (follow_symlinks or not path.is_symlink()) and path.is_file():
                yield path


def _written_by_jitrace() -> Callable[[Path], bool]:
    from jitrace.analyzer import outputs

    listed: dict[Path, set[str]] = {}  # per folder: the output names its manifest lists

    def written(path: Path) -> bool:
        folder = path.parent
        if folder not in listed:
            listed[folder] = outputs.own_files(folder, outputs.KNOWN_OUTPUTS | outputs.REPLAY_OUTPUTS)
        return path.name in listed[folder]

    return written


def _is_data(rel: Path) -> bool:
    return not any(part.startswith((".", "_")) for part in rel.parts) and not rel.name.endswith(_SKIP_SUFFIXES)


def peek(path: Path, n: int = 4) -> bytes:
    """The first ``n`` bytes (to tell Parquet, which DuckDB reads itself, from files read here)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None


def is_compressed(head: bytes) -> bool:
    """Whether a file starting with ``head`` is gzip or zstd (which ``read_bytes`` decompresses)."""
    return head[:2] == _GZIP or head[:4] == _ZSTD


def head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of the file's content, decompressed as ``read_bytes`` does (without decompressing the
    rest); b"" when it cannot be read (``read_bytes`` then names the problem)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
            f.seek(0)
            if magic[:2] == _GZIP:
                return gzip.GzipFile(fileobj=f).read(n)
            if magic[:4] == _ZSTD:
                import zstandard

                return zstandard.ZstdDecompressor().stream_reader(f).read(n)
            return f.read(n)
    except Exception:  # OSError, EOFError, zlib.error, zstandard.ZstdError: all of them read_bytes' to report
        return b""


# A compressed input may expand this many times its size (OTLP JSON shrinks 10 to 50 times), and at least to
# INFLATE_FLOOR: past that it is refused as a compression bomb instead of taking the machine's memory.
INFLATE_RATIO = 200
INFLATE_FLOOR = 256 << 20


def inflate_limit(compressed: int) -> int:
    return max(INFLATE_FLOOR, INFLATE_RATIO * compressed)


def open_stream(path: Path) -> IO[bytes]:
    """The file's content as a binary stream, decompressed as it is read when it is gzip or zstd (by magic), past a
    byte order mark. For readers that never hold the whole file (``_zipkin``, ``_jaeger``)."""
    try:
        f: IO[bytes] = open(path, "rb")  # noqa: SIM115 (returned open: the caller closes it)
        magic = f.peek(4)[:4]  # type: ignore[attr-defined]
        if magic[:2] == _GZIP:
            f.close()
            f = gzip.open(path, "rb")  # noqa: SIM115
        elif magic[:4] == _ZSTD:
            import zstandard

            f = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f, closefd=True))
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if f.peek(3)[:3] == BOM:  # type: ignore[attr-defined]
            f.read(3)
    except Exception:  # a corrupt start: the reader reports it where it reads
        pass
    return f


def read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it is gzip or zstd (by magic, not by name), up to ``inflate_limit``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not is_compressed(data[:4]):
        return data
    limit = inflate_limit(len(data))
    try:
        if data[:2] == _GZIP:
            out = _read_capped(gzip.GzipFile(fileobj=io.BytesIO(data)), limit + 1)
        else:
            import zstandard

            out = _read_capped(zstandard.ZstdDecompressor().stream_reader(data), limit + 1)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise UserError(f"{path}: cannot decompress: {exc}") from None
    except Exception as exc:  # zstandard.ZstdError has no common base with the above
        raise UserError(f"{path}: cannot decompress: {exc}") from None
    if len(out) > limit:
        raise UserError(f"{path}: decompresses to more than {limit >> 20} MiB ({INFLATE_RATIO} times its size): "
                        "refused as a compression bomb")
    return out


def _read_capped(reader: io.RawIOBase | io.BufferedIOBase, limit: int) -> bytes:
    """At most ``limit`` bytes of a decompressing reader (whose reads may return less than asked)."""
    parts, size = [], 0
    while size < limit:
        part = reader.read(min(limit - size, 16 << 20))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)
