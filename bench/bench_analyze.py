"""`jitrace analyze` end to end on generated Parquet: spans/s, peak memory, and the ratio to a bare DuckDB scan
plus client/server join of the same files, each measured in a child process of its own in one run.

Targets (2-core machine): >= 1M spans/s, <= 1.5x the bare scan-and-join (issue 23), <= 2 GB peak RSS at 10M
spans.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

from bench import generate_apart, run_child

TITLE = "Analyzer: jitrace analyze end to end"

HOSTS_CLIENT = 16
HOSTS_SERVER = 7  # server host 0 is the issuer's


def generate(out: Path, spans: int, files: int = 4) -> Path:
    """``spans`` spans (client/server pairs, 1 issue span per 100 calls, 4% denials) as `jitrace collect` writes."""
    import duckdb

    from jitrace.analyzer.steps.spans_view import FACTS_FILE_OPTIONS, facts_file_sql

    folder = out / "spans" / "hour=2025-10-09T08"
    folder.mkdir(parents=True, exist_ok=True)
    calls = spans // 2
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    per_file = -(-calls // files)
    for f in range(files):
        lo, hi = f * per_file, min(calls, (f + 1) * per_file)
        con.execute(textwrap.dedent(f"""
            CREATE OR REPLACE TEMP TABLE generated AS
            WITH calls AS (
                SELECT i, 1760000000000000000 + i * 1000000 AS t1, i % {HOSTS_CLIENT} AS ch, i % {HOSTS_SERVER} AS sh,
                       CASE WHEN i % 50 = 0 THEN 16 WHEN i % 50 = 25 THEN 7 ELSE 0 END AS code
                FROM range({lo}, {hi}) AS r(i)
            ),
            timed AS (
                SELECT *, (ch * 10 - sh * 20) * 1000000 AS skew_ns,  -- server clock - client clock
                       1760000000 + 3600 - (i % 3600) AS exp_s FROM calls
            ),
            rows AS (  -- trace ids from 1: an all-zero trace id is no trace to OTLP (its readers count it bad)
                SELECT format('{{:032x}}', i + 1) AS trace_id, format('{{:016x}}', 2 * i + 1) AS span_id,
                       NULL AS parent_span_id, 'CLIENT' AS kind, t1 AS start_ns, t1 + 3000000 AS end_ns,
                       'frontend-' || ch AS service, 'client-' || ch AS host, code,
                       json_object('rpc.system', 'grpc', 'rpc.service', 'shop.Orders', 'rpc.method', 'Read',
                           'rpc.grpc.status_code', code, 'jit.token.present', true, 'jit.token.id', 'tok' || (i % 9973),
                           'jit.token.sub', 'user' || (i % 101), 'jit.token.iat', exp_s - 3600, 'jit.token.exp', exp_s,
                           'jit.token.ttl_s', exp_s - t1 / 1e9, 'jit.token.age_s', t1 / 1e9 - exp_s + 3600,
                           'jit.clock.sent_ns', t1, 'jit.clock.offset_s', skew_ns / 1e9, 'jit.clock.delay_s', 0.002,
                           'jit.denial.reason', CASE code WHEN 16 THEN 'TOKEN_EXPIRED' WHEN 7 THEN 'PERMISSION_MISSING'
                           END)::VARCHAR AS attributes
                FROM timed
                UNION ALL
                SELECT format('{{:032x}}', i + 1), format('{{:016x}}', 2 * i + 2), format('{{:016x}}', 2 * i + 1),
                       'SERVER', t1 + 1000000 + skew_ns, t1 + 2000000 + skew_ns, CASE WHEN sh = 0 THEN 'issuer' ELSE
                       'orders-' || sh END, CASE WHEN sh = 0 THEN 'issuer' ELSE 'server-' || sh END, code,
                       json_object('rpc.system', 'grpc', 'rpc.service', 'shop.Orders', 'rpc.method', 'Read',
                           'rpc.grpc.status_code', code, 'jit.token.present', true, 'jit.token.id', 'tok' || (i % 9973),
                           'jit.token.sub', 'user' || (i % 101), 'jit.token.iat', exp_s - 3600, 'jit.token.exp', exp_s,
                           'jit.token.ttl_s', CASE WHEN code = 16 THEN -0.5 ELSE exp_s - t1 / 1e9 END,
                           'jit.token.verdict', CASE WHEN code = 16 THEN 'expired' ELSE 'valid' END,
                           'jit.auth.wait_s', 0.0002, 'jit.clock.peer_sent_ns', t1,
                           'jit.clock.received_ns', t1 + 1000000 + skew_ns,
                           'jit.policy.decision', CASE WHEN code = 7 THEN 'deny' WHEN code = 0 THEN 'allow' END,
                           'jit.policy.version', 'v1', 'jit.policy.required', 'orders.read',
                           'jit.policy.granted', CASE WHEN code = 7 THEN ['orders.list'] ELSE ['orders.read'] END,
                           'jit.denial.reason', CASE code WHEN 16 THEN 'TOKEN_EXPIRED' WHEN 7 THEN 'PERMISSION_MISSING'
                           END)::VARCHAR
                FROM timed
                UNION ALL
                SELECT format('{{:032x}}', i + 1), format('{{:016x}}', 2 * i + 3), format('{{:016x}}', 2 * i + 2),
                       'INTERNAL', t1 + 1100000 + skew_ns, t1 + 1200000 + skew_ns, 'issuer', 'issuer', 0,
                       json_object('jit.token.id', 'tok' || (i % 9973), 'jit.token.sub', 'user' || (i % 101))::VARCHAR
                FROM timed WHERE sh = 0 AND i % 100 = 0
            )
            SELECT trace_id, span_id, parent_span_id,
                   CASE WHEN kind = 'INTERNAL' THEN 'jit.issue' ELSE 'shop.Orders/Read' END AS name, kind,
                   start_ns, end_ns, 'UNSET' AS status_code, NULL::VARCHAR AS status_message, service,
                   json_object('service.name', service, 'host.name', host)::VARCHAR AS resource, attributes,
                   '[]' AS events, '[]' AS links, 'opentelemetry.instrumentation.grpc' AS scope, 'bench' AS source
            FROM rows
        """))
        # as `jitrace collect` compacts its files: the normalized columns plus the typed facts (queries/span_facts.sql),
        # denied spans first
        con.execute(f"COPY ({facts_file_sql('generated')}) TO '{folder / f'part-{f}.parquet'}' "
                    f"({FACTS_FILE_OPTIONS})")
    return out


CHILD = r"""
import json, resource, sys, time
mode, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
started = time.perf_counter()
if mode == "analyze":
    from jitrace.analyzer.analyze import analyze
    summary = analyze([data], out, quiet=True)
    result = {"spans": summary["spans"], "denials": summary["denials"]}
else:  # the floor: read every column of the same files once, and join each server span to its client
    import duckdb
    con = duckdb.connect()
    for setting in ("memory_limit = '1500MB'", "preserve_insertion_order = false", "enable_progress_bar = false"):
        con.execute("SET " + setting)  # the same settings analyze runs with
    files = f"read_parquet('{data}/**/*.parquet', hive_partitioning = false)"
    counts = con.execute(f"SELECT count(*), count(COLUMNS(*)) FROM {files}").fetchone()  # every column decoded
    pairs = con.execute(f"SELECT count(*) FROM {files} s JOIN {files} c ON c.trace_id = s.trace_id "
                        "AND c.span_id = s.parent_span_id WHERE s.kind = 'SERVER' AND c.kind = 'CLIENT'").fetchone()[0]
    result = {"spans": counts[0], "pairs": pairs}
result["seconds"] = time.perf_counter() - started
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def _child(mode: str, data: Path, out: Path) -> dict:
    return run_child(CHILD, mode, str(data), str(out), what=mode, timeout=3600)


ROUNDS = 3  # bare and analyze, side by side, this many times per size: the medians, so one noisy run does not decide
TARGET_SPANS_PER_S, TARGET_RATIO, TARGET_RSS_MB = 1_000_000, 1.5, 2048


def run(quick: bool) -> str:
    sizes = [100_000] if quick else [1_000_000, 10_000_000]
    rounds = 1 if quick else ROUNDS
    rows = []
    with tempfile.TemporaryDirectory(prefix="jitrace-bench-") as tmp:
        for n in sizes:
            data = Path(tmp) / f"data-{n}"
            gen_s = generate_apart("bench_analyze", data, n)
            print(f"generated {n} spans in {gen_s:.1f} s", file=sys.stderr, flush=True)
            pairs = []
            for _ in range(rounds):
                bare = _child("bare", data, Path(tmp) / f"bare-{n}")
                full = _child("analyze", data, Path(tmp) / f"out-{n}")
                pairs.append((full, bare))
                print(f"{n}: analyze {full['seconds']:.2f} s, bare {bare['seconds']:.2f} s", file=sys.stderr,
                      flush=True)
            rows.append((n, pairs))
    lines = [
        f"| spans | denials | analyze (s), median of {rounds} | analyze, all runs (s) | spans/s | peak RSS (MB) | "
        "bare scan+join (s) | bare RSS (MB) | ratio | targets |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for n, pairs in rows:
        full = [f for f, _ in pairs]
        spans, denials = full[0]["spans"], full[0]["denials"]
        seconds = statistics.median(f["seconds"] for f in full)
        ratio = statistics.median(f["seconds"] / b["seconds"] for f, b in pairs)  # each run beside its bare run
        rss = max(f["peak_rss_mb"] for f in full)
        verdicts = []  # the targets are set for 1M and 10M spans (--quick's 100k pays the fixed part 10 times over)
        if n >= 1_000_000:
            verdicts += [f">= 1M spans/s {'met' if spans / seconds >= TARGET_SPANS_PER_S else 'NOT met'}",
                         f"<= {TARGET_RATIO:g}x {'met' if ratio <= TARGET_RATIO else 'NOT met'}"]
        if n >= 10_000_000:
            verdicts.append(f"<= 2 GB {'met' if rss <= TARGET_RSS_MB else 'NOT met'}")
        every = ", ".join(f"{f['seconds']:.2f}" for f in full)
        lines.append(
            f"| {spans:,} | {denials:,} | {seconds:.2f} | {every} | "
            f"{spans / seconds:,.0f} | {rss:,.0f} | {statistics.median(b['seconds'] for _, b in pairs):.2f} | "
            f"{max(b['peak_rss_mb'] for _, b in pairs):,.0f} | {ratio:.2f}x | {'; '.join(verdicts)} |"
        )
    lines += [
        "",
        "Generated Parquet as `jitrace collect` compacts it (zstd, the typed facts included, denied spans first, "
        "row groups of 32,768 spans): "
        "client/server pairs across 16 client and 7 server hosts with "
        "per-host clock skew, full jit.* attributes, 4% denials, one `jit.issue` span per 100 issuer calls. "
        "`analyze` is the whole `jitrace analyze` (load, every SQL step, offsets, outputs, report.html) in a child "
        "process, its imports included (not the interpreter's start); `bare` decodes every column of the same "
        "files once (an in-memory DuckDB "
        "scan, nothing stored) and joins each server span to its client: the least any analysis must do. "
        "Each size runs bare then analyze, side by side, several times: the table gives the median time, the "
        "median of the per-run ratios and the highest peak RSS, so one run that meets the machine busy does not "
        "decide. Targets: >= 1M spans/s, <= 1.5x bare, <= 2 GB peak RSS at 10M spans.",
    ]
    return "\n".join(lines)
