"""Loader throughput per format: spans (or log records) per second into DuckDB, and bytes per span on disk.

The same synthetic gRPC spans (8 attributes each, like an instrumented server span) are written in every format,
then each file is loaded into a fresh in-memory DuckDB by ``load_into``; best of a few runs.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import tempfile
import time
from pathlib import Path

import duckdb

from tests.spanfactory import otlp_value as any_value  # the tests' OTLP AnyValue builder

TITLE = "Loaders: spans/s per input format"
T0 = 1_700_000_000_000_000_000
TARGETS = {"jitrace Parquet, every column read once": 5_000_000, "OTLP JSON lines": 300_000}
# The same file read by the fast path's fallback, beside the row above (the C reader, analyzer/load/_otlp_native.c)
PYTHON_READER = "OTLP JSON lines, Python reader (no fast path)"


def _spans(n: int) -> list[dict]:
    out = []
    for i in range(n):
        if i % 64 == 0:
            trace_id = os.urandom(16).hex()
        out.append({
            "trace_id": trace_id, "span_id": os.urandom(8).hex(), "parent": os.urandom(8).hex(),
            "start": T0 + i * 1000, "end": T0 + i * 1000 + 500, "service": f"svc{i % 4}",
            "attrs": {"rpc.system": "grpc", "rpc.service": "jitlab.Orders", "rpc.method": "Get",
                      "rpc.grpc.status_code": 7, "jit.token.ttl_s": -1.5, "jit.token.verdict": "expired",
                      "jit.token.present": True, "jit.policy.granted": ["orders.read", "orders.write"]},
        })
    return out


def _otlp_lines(spans: list[dict], path: Path, batch: int = 512) -> None:
    with open(path, "w") as f:
        for b in range(0, len(spans), batch):
            chunk = spans[b:b + batch]
            req = {"resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": chunk[0]["service"]}}]},
                "scopeSpans": [{"scope": {"name": "opentelemetry.instrumentation.grpc"}, "spans": [{
                    "traceId": s["trace_id"], "spanId": s["span_id"], "parentSpanId": s["parent"],
                    "name": "jitlab.Orders/Get", "kind": 2, "startTimeUnixNano": str(s["start"]),
                    "endTimeUnixNano": str(s["end"]), "status": {},
                    "attributes": [{"key": k, "value": any_value(v)} for k, v in s["attrs"].items()]} for s in chunk]}],
            }]}
            f.write(json.dumps(req, separators=(",", ":")) + "\n")


def _otlp_proto(spans: list[dict], path: Path, batch: int = 512) -> None:
    import base64

    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    with open(path, "wb") as f:
        for line in Path(str(path) + ".src").read_text().splitlines():
            doc = json.loads(line)
            for rs in doc["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for s in ss["spans"]:  # protobuf's JSON mapping wants base64 bytes
                        for k in ("traceId", "spanId", "parentSpanId"):
                            s[k] = base64.b64encode(bytes.fromhex(s[k])).decode()
            data = ParseDict(doc, ExportTraceServiceRequest()).SerializeToString()
            f.write(struct.pack(">I", len(data)) + data)
    del batch


def jaeger_tag(k: str, v) -> dict:
    """A Jaeger tag of a Python value (lists as JSON text, as Jaeger clients write them)."""
    kind = "bool" if isinstance(v, bool) else "int64" if isinstance(v, int) else \
        "float64" if isinstance(v, float) else "string"
    return {"key": k, "type": kind, "value": json.dumps(v) if isinstance(v, list) else v}


def _jaeger(spans: list[dict], path: Path) -> None:
    data = [{"traceID": spans[0]["trace_id"], "processes": {f"p{i}": {"serviceName": f"svc{i}", "tags": []}
                                                           for i in range(4)},
             "spans": [{"traceID": s["trace_id"], "spanID": s["span_id"], "operationName": "jitlab.Orders/Get",
                        "references": [{"refType": "CHILD_OF", "traceID": s["trace_id"], "spanID": s["parent"]}],
                        "startTime": s["start"] // 1000, "duration": (s["end"] - s["start"]) // 1000,
                        "tags": [jaeger_tag(k, v) for k, v in s["attrs"].items()] + [jaeger_tag("span.kind", "server")],
                        "processID": f"p{s['service'][-1]}", "logs": []} for s in spans]}]
    path.write_text(json.dumps({"data": data}))


def _zipkin(spans: list[dict], path: Path) -> None:
    path.write_text(json.dumps([{
        "traceId": s["trace_id"], "id": s["span_id"], "parentId": s["parent"], "name": "get", "kind": "SERVER",
        "timestamp": s["start"] // 1000, "duration": (s["end"] - s["start"]) // 1000,
        "localEndpoint": {"serviceName": s["service"]},
        "tags": {k: json.dumps(v) if not isinstance(v, str) else v for k, v in s["attrs"].items()},
    } for s in spans]))


def _app_logs(n: int, path: Path) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"asctime": "2024-05-01 12:00:00,250", "levelname": "WARNING", "name": "orders",
                                "message": f"token expired for call {i}", "otelTraceID": os.urandom(16).hex(),
                                "otelSpanID": os.urandom(8).hex(), "otelServiceName": "orders"}) + "\n")


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its finished children (the parallel parsers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _time_load(paths: list[Path], repeats: int, read_all: bool = False) -> tuple[float, float, int]:
    """Best wall time, the CPU time (all threads) of that run, and the records loaded. ``read_all``: then decode
    every column of the spans once (Parquet is read in place: the load alone only reads footers)."""
    from jitrace.analyzer.load import load_into

    best, cpu, count = float("inf"), 0.0, 0
    for _ in range(repeats):
        con = duckdb.connect()
        started, started_cpu = time.perf_counter(), _cpu()
        rep = load_into(con, [str(p) for p in paths])
        if read_all:
            con.execute("SELECT count(*), count(COLUMNS(*)) FROM spans").fetchone()
        wall = time.perf_counter() - started
        if wall < best:
            best, cpu = wall, _cpu() - started_cpu
        count = rep.spans + rep.logs
        con.close()
    return best, cpu, count


def run(quick: bool) -> str:
    n = 5_000 if quick else 100_000
    parquet_rows = 50_000 if quick else 4_000_000
    repeats = 2 if quick else 3
    from jitrace.analyzer.load import _otlp_json_native, _text

    native = _otlp_json_native.AVAILABLE

    with tempfile.TemporaryDirectory(prefix="jitrace-bench-load-") as tmp:
        d = Path(tmp)
        spans = _spans(n)
        files = {
            "OTLP JSON lines": d / "spans.jsonl",
            PYTHON_READER: d / "spans.jsonl",
            "OTLP JSON lines, gzip": d / "spans.jsonl.gz",
            "OTLP protobuf (length-prefixed)": d / "spans.binpb",
            "Jaeger UI JSON": d / "jaeger.json",
            "Zipkin v2 JSON": d / "zipkin.json",
            "jitrace Parquet": d / "parquet",
            "jitrace Parquet, every column read once": d / "parquet",
            "application JSON logs": d / "app.log.jsonl",
        }
        _otlp_lines(spans, files["OTLP JSON lines"])
        import gzip

        files["OTLP JSON lines, gzip"].write_bytes(gzip.compress(files["OTLP JSON lines"].read_bytes(), 6))
        Path(str(files["OTLP protobuf (length-prefixed)"]) + ".src").write_text(files["OTLP JSON lines"].read_text())
        _otlp_proto(spans, files["OTLP protobuf (length-prefixed)"])
        Path(str(files["OTLP protobuf (length-prefixed)"]) + ".src").unlink()
        _jaeger(spans, files["Jaeger UI JSON"])
        _zipkin(spans, files["Zipkin v2 JSON"])
        _app_logs(n, files["application JSON logs"])
        _parquet(files["OTLP JSON lines"], files["jitrace Parquet"], parquet_rows)
        _time_load([files["Zipkin v2 JSON"]], 1)  # warm-up: imports, pyarrow's first-call setup

        lines = ["| format | records | bytes/record | best load s | records/s | records per CPU-second | target |",
                 "|---|---:|---:|---:|---:|---:|---|"]
        for name, path in files.items():
            size = sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size
            _text.FAST_PATH = name != PYTHON_READER
            try:
                secs, cpu, count = _time_load([path], repeats, read_all=name.endswith("read once"))
            finally:
                _text.FAST_PATH = True
            target = TARGETS.get(name)
            verdict = "" if target is None else f"{target:,} ({'met' if count / secs >= target else 'NOT met'})"
            lines.append(f"| {name} | {count:,} | {size / count:,.0f} | {secs:.3f} | {count / secs:,.0f} | "
                         f"{count / max(cpu, 1e-9):,.0f} | {verdict} |")
    return (
        f"{os.cpu_count()} cores, shared with whatever else runs (records per CPU-second counts this process's CPU "
        "time, all its threads, and its parser processes': a figure less at the mercy of the machine's load). "
        "Spans: gRPC server spans with 8 attributes "
        "(strings, int, double, bool, string array), 512 per OTLP request; Parquet: those spans copied (new ids, "
        "shifted times, per-span token ids, timings and peers, so that it compresses like real data) to "
        f"{parquet_rows:,} rows, as `jitrace collect` leaves them (with the span facts). Parquet is read in place: "
        "loading only reads the footers (first Parquet row), so the second row adds one decoding of every column, "
        "what the first query pays; its target is the loader target. OTLP JSON-lines span files are read by the C "
        f"reader (analyzer/load/_otlp_native.c{'' if native else ': NOT BUILT here'}) on every core, when it reads "
        "them exactly; the Python reader's row is the fallback where it was not built. Other text inputs over "
        "32 MiB are parsed in Python on every core (JSON lines cut at line ends).\n\n" + "\n".join(lines)
    )


def _parquet(src: Path, out: Path, rows: int) -> None:
    """Parquet as `jitrace collect` leaves it (compacted: the normalized columns and the span facts, zstd), ``rows``
    distinct spans (ids varied, times shifted)."""
    from jitrace.analyzer.load import load_into
    from jitrace.analyzer.schema import SPANS
    from jitrace.analyzer.steps.spans_view import FACTS_FILE_OPTIONS, facts_file_sql

    con = duckdb.connect()
    load_into(con, [str(src)])
    n = con.execute("SELECT count(*) FROM span_fact_rows").fetchone()[0]  # the loaded spans, with their facts
    copies = max(1, -(-rows // n))
    out.mkdir(parents=True, exist_ok=True)
    # Per-span values as real spans have them (trace ids, a token id, timings, a peer port), so that Parquet
    # compresses like real data (~80 B per span, ~800 as OTLP JSON), not like one span copied millions of times.
    rows_sql = (
        "(SELECT s.* REPLACE (md5(s.trace_id || i::VARCHAR) AS trace_id, md5(s.span_id || i::VARCHAR)[:16] AS "
        "span_id, md5(s.parent_span_id || i::VARCHAR)[:16] AS parent_span_id, start_ns + i * 1000000 AS start_ns, "
        "end_ns + i * 1000000 + (random() * 1e9)::BIGINT AS end_ns, json_merge_patch(s.attributes, json_object("
        "'jit.token.id', md5(s.span_id || i::VARCHAR || 'token'), 'jit.auth.wait_s', random(), "
        "'jit.token.ttl_s', random() * 600 - 60, 'net.peer.port', (random() * 60000)::INTEGER, "
        "'net.peer.ip', '10.0.' || (random() * 255)::INTEGER || '.' || (random() * 255)::INTEGER))::VARCHAR AS "
        "attributes, NULL AS source) FROM (SELECT {base} FROM span_fact_rows) AS s, range(?) AS t(i) LIMIT ?)"
    ).replace("{base}", ", ".join(SPANS.names))
    con.execute(f"COPY ({facts_file_sql(rows_sql)}) TO '{out}/spans.parquet' "
                f"({FACTS_FILE_OPTIONS})", [copies, rows])
