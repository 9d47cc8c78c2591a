"""`jitrace analyze` end to end on the files users already have (issue 23): the bench's world written as the
Collector's OTLP JSON lines, OTLP protobuf, a Jaeger download and a Zipkin list, beside the compacted Parquet of the
same spans; spans/s, CPU time, bytes/span, peak memory, the load's and the steps' shares, and whether the
attributions are byte-identical. Each run is a child process of its own, in one run of this section. Then peak
memory on ten times as many spans of Collector JSON lines, written as a stream (copies of the file with other
trace and span ids) and deleted after.

The world is bench_analyze's (client/server pairs, an issuance span per 100 calls, 4% denials, skewed clocks);
hosts are named by address (a Zipkin endpoint carries no host name) and times are whole microseconds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from bench.bench_analyze import generate
from bench.bench_load import any_value as _value
from bench.bench_load import jaeger_tag as _tag

TITLE = "Analyzer: each input format end to end"
TARGET_SPANS_S = 300_000  # Collector JSON lines, end to end (issue 23)
TARGET_PEAK_MB = 2048  # Collector JSON lines at 10M spans
COPIES = 10  # the big file: this many copies of the JSON lines
KINDS = {"CLIENT": 3, "SERVER": 2, "INTERNAL": 1}

CHILD = r"""
import json, resource, sys, time
from jitrace.analyzer.analyze import analyze
started = time.perf_counter()
summary = analyze([sys.argv[1]], sys.argv[2], quiet=False)
usage = resource.getrusage(resource.RUSAGE_SELF)
# this process's own peak (VmHWM): ru_maxrss keeps the parent's peak across fork and exec, and the parent held the
# formats it wrote
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
result = {"seconds": time.perf_counter() - started, "spans": summary["spans"], "denials": summary["denials"],
          "bad_records": summary["bad_records"], "peak_rss_mb": peak_kb / 1024,
          "cpu_s": usage.ru_utime + usage.ru_stime}
print(json.dumps(result))
"""


# The floor of a load of Collector JSON lines: the C reader alone (every batch read, nothing stored), then the same
# batches, read first, stored with their facts into a new jitrace.duckdb (the loader's statement), each the least of
# ROUNDS runs in a child process of its own: what the load costs before anything else of a run.
FLOOR_CHILD = r"""
import json, os, sys, tempfile, time
from pathlib import Path
import pyarrow as pa
from jitrace.analyzer.load import _otlp_json_native as native
from jitrace.analyzer.steps import session, spans_view
path, rounds = Path(sys.argv[1]), int(sys.argv[2])
def reading(con, data):
    return native._Reading(con, path, data)
parse, store = [], []
for _ in range(rounds):
    with tempfile.TemporaryDirectory() as tmp:
        con = session.connect(Path(tmp) / "jitrace.duckdb", define_view=False)
        spans_view.ensure(con, view=False)
        with native.contents(path) as data:
            r = reading(con, data)
            cpu = time.process_time()
            rows = sum(b.num_rows for b in r.batches())
            parse.append(time.process_time() - cpu)
            r.results.close()
            r = reading(con, data)
            batches = list(r.batches())
            r.results.close()
        con.register("b", pa.RecordBatchReader.from_batches(r.schema, iter(batches)))
        cpu = time.process_time()
        con.execute("BEGIN")
        con.execute(f"INSERT INTO {spans_view.FACTS_TABLE} BY NAME SELECT * FROM ({r.facts.format('b')})")
        con.execute("COMMIT")
        store.append(time.process_time() - cpu)
        con.close()
print(json.dumps({"spans": rows, "parse_cpu_s": min(parse), "store_cpu_s": min(store)}))
"""
FLOOR_ROUNDS = 3


def _floor(json_lines: Path) -> str:
    """The CPU floor of the JSON lines' load against the target's budget (2 cores for spans / TARGET_SPANS_S s)."""
    run = subprocess.run([sys.executable, "-c", FLOOR_CHILD, str(json_lines), str(FLOOR_ROUNDS)],
                         capture_output=True, text=True, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    budget = 2 * result["spans"] / TARGET_SPANS_S
    floor = result["parse_cpu_s"] + result["store_cpu_s"]
    return textwrap.dedent(f"""
        Where the Collector JSON lines' load goes, CPU seconds (user and system, every thread; the least of
        {FLOOR_ROUNDS} runs): the C reader alone, every batch read and nothing stored, then the same batches, read
        first, stored with their facts into a new jitrace.duckdb by the loader's statement. The target's budget is
        2 cores for the whole run at {TARGET_SPANS_S:,} spans/s, steps and outputs included.

        | spans | C reader alone | storing with facts | the two | the target's budget, whole run |
        |---:|---:|---:|---:|---:|
        | {result['spans']:,} | {result['parse_cpu_s']:.2f} | {result['store_cpu_s']:.2f} | {floor:.2f} | {budget:.2f} |
        """).strip()


def _address(host: str) -> str:
    kind, _, number = host.rpartition("-")
    return f"10.{ {'client': 1, 'server': 2}.get(kind, 3)}.0.{int(number) + 1 if number.isdigit() else 1}"


def write_formats(world: Path, out: Path) -> dict[str, Path]:
    """The world's spans in each text format, 512 spans a batch (an export request, a line)."""
    paths = {"OTLP JSON lines (Collector file exporter)": out / "json" / "spans.jsonl",
             "OTLP protobuf (Collector file exporter)": out / "protobuf" / "spans.binpb",
             "Jaeger UI download": out / "jaeger" / "traces.json", "Zipkin v2 list": out / "zipkin" / "spans.json"}
    for path in paths.values():
        path.parent.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(open(path, "wb" if "protobuf" in name else "w"))
                 for name, path in paths.items()}
        _write(world, files)
    return paths


def _write(world: Path, files: dict) -> None:
    import pyarrow.parquet as pq
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    jaeger, zipkin = files["Jaeger UI download"], files["Zipkin v2 list"]
    jaeger.write('{"data": [')
    zipkin.write("[")
    first = True
    columns = ["trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "service", "resource",
               "attributes"]
    for part in sorted(world.rglob("*.parquet")):
        for batch in pq.ParquetFile(part).iter_batches(batch_size=512, columns=columns):
            rows = batch.to_pylist()
            for r in rows:
                r["ip"] = _address(json.loads(r["resource"])["host.name"])
                r["attrs"] = {k: v for k, v in json.loads(r["attributes"]).items() if v is not None}
                r["start_ns"] -= r["start_ns"] % 1000
                r["end_ns"] -= r["end_ns"] % 1000
            request = _otlp(rows)
            files["OTLP JSON lines (Collector file exporter)"].write(json.dumps(request, separators=(",", ":")) + "\n")
            for rs in request["resourceSpans"]:
                for span in rs["scopeSpans"][0]["spans"]:  # protobuf's JSON mapping spells bytes in base64
                    for key in ("traceId", "spanId", "parentSpanId"):
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
            message = ParseDict(request, ExportTraceServiceRequest()).SerializeToString()
            files["OTLP protobuf (Collector file exporter)"].write(struct.pack(">I", len(message)) + message)
            for r in rows:
                jaeger.write(("" if first else ",") + json.dumps(_jaeger_trace(r), separators=(",", ":")))
                zipkin.write(("" if first else ",") + json.dumps(_zipkin_span(r), separators=(",", ":")))
                first = False
    jaeger.write("]}")
    zipkin.write("]")


def _otlp(rows: list[dict]) -> dict:
    by_resource: dict[tuple, list[dict]] = {}
    for r in rows:
        by_resource.setdefault((r["service"], r["ip"]), []).append(r)
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}},
                                    {"key": "host.ip", "value": {"stringValue": ip}}]},
        "scopeSpans": [{"scope": {"name": "opentelemetry.instrumentation.grpc"}, "spans": [{
            "traceId": r["trace_id"], "spanId": r["span_id"], "parentSpanId": r["parent_span_id"] or "",
            "name": r["name"], "kind": KINDS[r["kind"]], "startTimeUnixNano": str(r["start_ns"]),
            "endTimeUnixNano": str(r["end_ns"]), "status": {},
            "attributes": [{"key": k, "value": _value(v)} for k, v in r["attrs"].items()]} for r in spans]}]}
        for (service, ip), spans in by_resource.items()]}


def _jaeger_trace(r: dict) -> dict:
    """A trace object of one span (the loader reads every span of every trace object)."""
    return {"traceID": r["trace_id"], "processes": {"p1": {"serviceName": r["service"], "tags": [_tag("ip", r["ip"])]}},
            "spans": [{"traceID": r["trace_id"], "spanID": r["span_id"], "operationName": r["name"], "processID": "p1",
                       "references": [{"refType": "CHILD_OF", "traceID": r["trace_id"], "spanID": r["parent_span_id"]}]
                       if r["parent_span_id"] else [],
                       "startTime": r["start_ns"] // 1000, "duration": (r["end_ns"] - r["start_ns"]) // 1000,
                       "tags": [_tag("span.kind", r["kind"].lower())] + [_tag(k, v) for k, v in r["attrs"].items()],
                       "logs": []}]}


def _zipkin_span(r: dict) -> dict:
    span = {"traceId": r["trace_id"], "id": r["span_id"], "name": r["name"], "timestamp": r["start_ns"] // 1000,
            "duration": (r["end_ns"] - r["start_ns"]) // 1000,
            "localEndpoint": {"serviceName": r["service"], "ipv4": r["ip"]},
            "tags": {k: json.dumps(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else str(v)
                     for k, v in r["attrs"].items()}}
    if r["kind"] in ("CLIENT", "SERVER"):
        span["kind"] = r["kind"]
    if r["parent_span_id"]:
        span["parentId"] = r["parent_span_id"]
    return span


def _compacted(json_lines: Path, out: Path) -> Path:
    """The same spans as `jitrace collect` compacts them (loaded from the JSON lines, written with their facts)."""
    import duckdb

    from jitrace.analyzer.load import load_into
    from jitrace.analyzer.steps.spans_view import FACTS_FILE_OPTIONS, facts_file_sql

    folder = out / "compacted" / "spans" / "hour=2025-10-09T08"
    folder.mkdir(parents=True)
    con = duckdb.connect()
    load_into(con, [str(json_lines)])
    con.execute("CREATE TEMP TABLE rows AS SELECT * EXCLUDE (source), 'bench' AS source FROM span_fact_rows")
    con.execute(f"COPY ({facts_file_sql('(SELECT ' + ', '.join(_span_columns()) + ' FROM rows)')}) "
                f"TO '{folder / 'compacted-0.parquet'}' ({FACTS_FILE_OPTIONS})")
    return out / "compacted"


def _span_columns() -> list[str]:
    from jitrace.analyzer.schema import SPANS

    return list(SPANS.names)


def _analyze(path: Path, out: Path) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out)], capture_output=True, text=True,
                         check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    steps_from = [line for line in run.stderr.splitlines() if "] loaded " in line]
    loaded_at = float(steps_from[0].split("[", 1)[1].split("s]", 1)[0]) if steps_from else float("nan")
    report = [line for line in run.stderr.splitlines() if "writing report.html" in line]
    steps_end = float(report[0].split("[", 1)[1].split("s]", 1)[0]) if report else float("nan")
    result["load_s"], result["steps_s"] = loaded_at, steps_end - loaded_at
    return result


def write_copies(json_lines: Path, out: Path, copies: int) -> Path:
    """``copies`` copies of a JSON-lines file of the bench world, one after the other, each with other trace and span
    ids (an id's first hex digit is the copy's number: the world's ids start with zeros): written as a stream, a line
    at a time."""
    with open(out, "wb") as f:
        for copy in range(copies):
            with open(json_lines, "rb") as lines:
                for line in lines:
                    for key in (b"traceId", b"spanId", b"parentSpanId"):
                        line = line.replace(b'"%s":"0' % key, b'"%s":"%x' % (key, copy)) if copy else line
                    f.write(line)
    return out


def _row(name: str, result: dict, size: int, same: str) -> str:
    return (f"| {name} | {result['spans']:,} | {size / result['spans']:,.0f} | {result['seconds']:.2f} | "
            f"{result['spans'] / result['seconds']:,.0f} | {result['cpu_s']:.1f} | {result['load_s']:.2f} | "
            f"{result['steps_s']:.2f} | {result['peak_rss_mb']:,.0f} | {same} |")


def run(quick: bool) -> str:
    spans = 20_000 if quick else 1_000_000
    json_name = "OTLP JSON lines (Collector file exporter)"
    with tempfile.TemporaryDirectory(prefix="jitrace-bench-formats-") as tmp:
        d = Path(tmp)
        world = generate(d / "world", spans)
        paths = write_formats(world / "spans", d / "in")
        paths["Compacted Parquet (jitrace collect)"] = _compacted(paths[json_name], d / "in")
        lines = ["| input | spans | bytes/span | end to end s | spans/s | CPU s | load s | steps after loading s | "
                 "peak RSS MB | attributions.csv |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        reference = None
        verdicts = []
        for name, path in paths.items():
            result = _analyze(path, d / "out" / name.split()[0])
            size = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*.parquet")))
            csv = (d / "out" / name.split()[0] / "attributions.csv").read_bytes()
            reference = reference or csv
            same = "the reference" if csv is reference else "identical" if csv == reference else "DIFFERS"
            lines.append(_row(name, result, size, same))
            if name == json_name:
                rate = result["spans"] / result["seconds"]
                half = result["steps_s"] <= result["load_s"] / 2
                verdicts += [f"{TARGET_SPANS_S:,} spans/s {'met' if rate >= TARGET_SPANS_S else 'NOT met'} "
                             f"({rate:,.0f})",
                             f"steps at most half the load {'met' if half else 'NOT met'} "
                             f"({result['steps_s']:.2f} s against {result['load_s']:.2f} s)"]
        floor = _floor(paths[json_name])
        big = d / "big.jsonl"
        write_copies(paths[json_name], big, COPIES)
        for path in [*paths.values(), world]:  # only the big file and its output on disk while it runs
            shutil.rmtree(path.parent if path.is_file() else path, ignore_errors=True)
        result = _analyze(big, d / "out" / "big")
        lines.append(_row(f"{json_name}, {COPIES} copies", result, big.stat().st_size, "(other traces)"))
        verdicts.append(f"peak memory at {result['spans']:,} spans of Collector JSON at most 2 GB "
                        f"{'met' if result['peak_rss_mb'] <= TARGET_PEAK_MB else 'NOT met'} "
                        f"({result['peak_rss_mb']:,.0f} MB)")
    return textwrap.dedent(f"""
        {spans:,} spans of bench_analyze's world in every format (hosts named by address, times in whole
        microseconds: what Jaeger and Zipkin carry), each analyzed end to end in a child process; the last row is
        {COPIES} copies of the JSON lines with other trace and span ids, written as a stream ({COPIES}x the spans;
        the same hosts and times). "CPU s" is the child's user and system time (the machine is shared: wall time
        depends on what else runs); "load" ends when the loader is done (every span stored with its facts); "steps"
        runs from there to the report. Targets for Collector JSON lines: {TARGET_SPANS_S:,} spans/s end to end,
        steps at most half the load, peak memory at most 2 GB at 10M spans.

        """).lstrip() + "\n".join(lines) + "\n\n" + "; ".join(verdicts) + ".\n\n" + floor
