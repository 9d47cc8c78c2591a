"""Zipkin and Jaeger documents at 1M spans: load time and peak memory against the file's size.

Both are read as streams (analyzer/load/_zipkin.py, _jaeger.py): the target is a peak resident memory of at most
twice the file's size. Each file is loaded by ``load_into`` in a fresh process (DuckDB as ``jitrace analyze`` sets
it up), whose peak RSS is reported beside that of the same process importing everything and loading nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bench import run_child

TITLE = "Loaders: Zipkin and Jaeger documents at 1M spans, peak memory"
T0_US = 1_700_000_000_000_000
SPANS_PER_TRACE = 10
ATTRS = {"rpc.system": "grpc", "rpc.service": "jitlab.Orders", "rpc.method": "Get", "rpc.grpc.status_code": 0,
         "jit.token.ttl_s": 41.5, "jit.token.verdict": "valid", "jit.token.present": True}

_CHILD = """
import json, re, sys, time
from jitrace.analyzer.steps import session
from jitrace.analyzer.load import load_into
con = session.connect()
started = time.perf_counter()
rep = load_into(con, sys.argv[1:]) if sys.argv[1:] else None
wall = time.perf_counter() - started
print(json.dumps({"spans": rep.spans if rep else 0, "bad": rep.bad_records if rep else 0, "wall": wall,
                  # VmHWM, not ru_maxrss: that one keeps the peak of the image before exec (the forking bench's)
                  "peak_kb": int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))}))
"""


def _ids(i: int) -> tuple[str, str, str]:
    trace = f"{i // SPANS_PER_TRACE + 1:032x}"
    return trace, f"{i + 1:016x}", f"{(i // SPANS_PER_TRACE) * SPANS_PER_TRACE + 1:016x}"


def _zipkin(n: int, path: Path) -> None:
    """A Zipkin v2 list of spans, written span by span (the bench holds none of it)."""
    with open(path, "w") as f:
        f.write("[")
        for i in range(n):
            trace, span, parent = _ids(i)
            f.write(("," if i else "") + json.dumps({
                "traceId": trace, "id": span, "parentId": parent, "name": "get",
                "kind": "SERVER" if i % 2 else "CLIENT", "timestamp": T0_US + i * 10, "duration": 500 + i % 97,
                "localEndpoint": {"serviceName": f"svc{i % 4}", "ipv4": f"10.0.0.{i % 16}"},
                "tags": {k: v if isinstance(v, str) else json.dumps(v) for k, v in ATTRS.items()}}))
        f.write("]")


def _tag(k: str, v: object) -> dict:
    kind = "bool" if isinstance(v, bool) else "int64" if isinstance(v, int) else \
        "float64" if isinstance(v, float) else "string"
    return {"key": k, "type": kind, "value": v}


def _jaeger(n: int, path: Path) -> None:
    """A Jaeger UI download ({"data": [trace, ...]}) of traces of SPANS_PER_TRACE spans, written trace by trace."""
    tags = [_tag(k, v) for k, v in ATTRS.items()]
    with open(path, "w") as f:
        f.write('{"data": [')
        for first in range(0, n, SPANS_PER_TRACE):
            spans = []
            for i in range(first, min(n, first + SPANS_PER_TRACE)):
                trace, span, parent = _ids(i)
                spans.append({"traceID": trace, "spanID": span, "operationName": "jitlab.Orders/Get",
                              "references": [{"refType": "CHILD_OF", "traceID": trace, "spanID": parent}],
                              "startTime": T0_US + i * 10, "duration": 500 + i % 97,
                              "tags": [*tags, _tag("span.kind", "server" if i % 2 else "client")],
                              "processID": f"p{i % 4}", "logs": []})
            processes = {f"p{k}": {"serviceName": f"svc{k}", "tags": [_tag("hostname", f"host{k}"),
                                                                       _tag("ip", f"10.0.0.{k}")]} for k in range(4)}
            f.write(("," if first else "") + json.dumps({"traceID": _ids(first)[0], "spans": spans,
                                                          "processes": processes, "warnings": None}))
        f.write('], "total": 0, "limit": 0, "offset": 0, "errors": null}')


def _child(paths: list[Path]) -> dict:
    return run_child(_CHILD, *map(str, paths), what="loader")


def run(quick: bool) -> str:
    n = 20_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="jitrace-bench-streams-") as tmp:
        d = Path(tmp)
        files = {"Zipkin v2 JSON (list of spans)": d / "zipkin.json", "Jaeger UI download": d / "jaeger.json"}
        _zipkin(n, files["Zipkin v2 JSON (list of spans)"])
        _jaeger(n, files["Jaeger UI download"])
        base = _child([])
        lines = ["| format | spans | file MB | load s | spans/s | peak RSS MB | peak RSS / file size | "
                 "peak RSS above an empty load, / file size |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, path in files.items():
            got = _child([path])
            assert got["spans"] == n and got["bad"] == 0, got
            size = path.stat().st_size
            peak = got["peak_kb"] * 1024
            lines.append(f"| {name} | {n:,} | {size / 1e6:,.0f} | {got['wall']:.1f} | {n / got['wall']:,.0f} | "
                         f"{peak / 1e6:,.0f} | {peak / size:.2f} | {(peak - base['peak_kb'] * 1024) / size:.2f} |")
    return (
        f"{os.cpu_count()} cores, shared. Each file loaded by `load_into` in a fresh process with the analyzer's "
        f"DuckDB settings (memory limit 1500MB); an empty load (imports, DuckDB) peaks at "
        f"{base['peak_kb'] / 1024:,.0f} MB. Spans: gRPC spans with 7 attributes, {SPANS_PER_TRACE} per trace, "
        "4 services on 16 (Zipkin) or 4 (Jaeger) hosts. Target: peak RSS at most 2x the file's size (the whole "
        "document in memory took about 10x: 1.16 GB for a 109 MB Jaeger file).\n\n" + "\n".join(lines)
    )
