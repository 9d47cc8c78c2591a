"""One OTLP JSON fast path: the C reader against msgspec (a maintained C JSON library) on the 1M-span file.

Issue 22 keeps the C reader (analyzer/load/_otlp_native.c) only if it is at least 1.5x faster end to end than a
reader built on msgspec. msgspec's own best case is measured: decoding every line into typed structs and nothing
more (no rows, no insert), a floor for any msgspec reader; then the Python reader with msgspec's decoder in place of
``json.loads``, which builds the same rows. The C reader and the other paths load into DuckDB end to end.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import duckdb
import msgspec

from bench.bench_load import _cpu, _otlp_lines, _spans

TITLE = "Loaders: one OTLP JSON fast path (C reader against msgspec)"
KEEP_RATIO = 1.5


class AnyValue(msgspec.Struct, omit_defaults=True):
    stringValue: str | None = None
    intValue: str | int | None = None
    doubleValue: float | None = None
    boolValue: bool | None = None
    arrayValue: dict | None = None


class KeyValue(msgspec.Struct):
    key: str
    value: AnyValue


class Span(msgspec.Struct):
    traceId: str
    spanId: str
    name: str = ""
    parentSpanId: str = ""
    kind: int = 0
    startTimeUnixNano: str | int = 0
    endTimeUnixNano: str | int = 0
    status: dict | None = None
    attributes: list[KeyValue] = []


class Scope(msgspec.Struct):
    spans: list[Span] = []
    scope: dict | None = None


class Resource(msgspec.Struct):
    attributes: list[KeyValue] = []


class ResourceSpans(msgspec.Struct):
    resource: Resource | None = None
    scopeSpans: list[Scope] = []


class Request(msgspec.Struct):
    resourceSpans: list[ResourceSpans] = []


def _msgspec_decode_only(path: Path) -> tuple[float, float, int]:
    decoder = msgspec.json.Decoder(Request)
    started, cpu = time.perf_counter(), time.process_time()
    count = 0
    with open(path, "rb") as f:
        for line in f:
            for rs in decoder.decode(line).resourceSpans:
                for ss in rs.scopeSpans:
                    count += len(ss.spans)
    return time.perf_counter() - started, time.process_time() - cpu, count


def _load(path: Path, *, fast: bool, loads=None) -> tuple[float, float, int]:
    from jitrace.analyzer.load import _parallel, _text, load_into

    saved = _text.FAST_PATH, _parallel.MIN_BYTES, json.loads
    _text.FAST_PATH = fast
    if loads is not None:  # one process: the parser processes would not see the patched decoder
        _parallel.MIN_BYTES, json.loads = 1 << 62, loads
    try:
        con = duckdb.connect()
        started, cpu = time.perf_counter(), _cpu()
        rep = load_into(con, [str(path)])
        wall, used = time.perf_counter() - started, _cpu() - cpu
        con.close()
    finally:
        _text.FAST_PATH, _parallel.MIN_BYTES, json.loads = saved
    return wall, used, rep.spans


def _msgspec_loads():
    """msgspec's decoder where ``json.loads`` was; json's own error on a failure (the reader reads its message)."""
    decode, loads = msgspec.json.decode, json.loads

    def patched(text):
        try:
            return decode(text)
        except msgspec.DecodeError:
            return loads(text)

    return patched


def run(quick: bool) -> str:
    n = 20_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="jitrace-bench-readers-") as tmp:
        path = Path(tmp) / "spans.jsonl"
        _otlp_lines(_spans(n), path)
        size = path.stat().st_size
        _load(path, fast=True)  # warm-up: imports, the page cache
        rows = {
            "C reader (analyzer/load/_otlp_native.c), end to end": _load(path, fast=True),
            "Python reader, json.loads, parser processes": _load(path, fast=False),
            "Python reader, msgspec's decoder, one process": _load(path, fast=False, loads=_msgspec_loads()),
            "msgspec: decode into typed structs only (no rows, no insert)": _msgspec_decode_only(path),
        }
    c_wall, c_cpu, _ = rows["C reader (analyzer/load/_otlp_native.c), end to end"]
    floor_wall, floor_cpu, _ = rows["msgspec: decode into typed structs only (no rows, no insert)"]
    lines = ["| reader | spans | wall s | spans/s | CPU s | spans per CPU-second | C reader's speed-up (CPU) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, (wall, cpu, count) in rows.items():
        lines.append(f"| {name} | {count:,} | {wall:.2f} | {count / wall:,.0f} | {cpu:.2f} | "
                     f"{count / max(cpu, 1e-9):,.0f} | {cpu / max(c_cpu, 1e-9):.1f}x |")
    ratio = floor_cpu / max(c_cpu, 1e-9)
    verdict = "kept" if ratio >= KEEP_RATIO else "NOT kept"
    return (
        f"{n:,} spans of OTLP JSON lines ({size / n:,.0f} bytes/span, 512 spans per request), msgspec "
        f"{msgspec.__version__}, {os.cpu_count()} cores. CPU counts every thread and parser process. "
        f"Even msgspec's floor (decoding alone, before any row is built) takes {ratio:.1f}x the C reader's CPU "
        f"for the whole load ({floor_wall / c_wall:.1f}x its wall time): the C reader is {verdict} "
        f"(threshold {KEEP_RATIO}x). DuckDB's JSON reader, a third implementation, is gone.\n\n" + "\n".join(lines)
    )
