"""`jitrace replay` throughput: recorded pycasbin decisions evaluated again under a candidate policy, each distinct
(request, roles) once, measured end to end (load, the decisions' SQL, pycasbin, flips, outputs) in a child process.

The generated spans are as `jitrace collect` compacts them (the typed facts included); the candidate is the lab's
model with a policy that drops one rule and adds another, so both kinds of flip occur.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

from bench import generate_apart, run_child
from jitrace import lab

TITLE = "Replay: recorded decisions under a candidate policy"

USERS = 1000  # principals; each holds one role
OBJECTS = ("inventory", "orders", "billing", "reports", "audit")
ROLES = ("viewer", "editor", "admin")
# the lab's role-based model (a JIT grant binds a subject to a role)
MODEL = (Path(lab.__file__).parent / "policies" / "model.conf").read_text()


def _policy(candidate: bool) -> str:
    """Every role reads every object, editors write all but audit, admins write all. The candidate lets editors write
    audit (deny -> allow) and stops viewers reading billing (allow -> deny)."""
    rules = []
    for obj in OBJECTS:
        for role in ROLES:
            if not (candidate and role == "viewer" and obj == "billing"):
                rules.append(f"p, {role}, {obj}, read")
        if obj != "audit" or candidate:
            rules.append(f"p, editor, {obj}, write")
        rules.append(f"p, admin, {obj}, write")
    return "".join(rule + "\n" for rule in rules)


def generate(out: Path, decisions: int, files: int = 4) -> Path:
    """``decisions`` server spans, each with a pycasbin decision under the recorded policy (v1) and its request."""
    import duckdb

    from jitrace.analyzer.steps.spans_view import FACTS_FILE_OPTIONS, facts_file_sql

    folder = out / "spans" / "hour=2025-10-09T08"
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    objects = "[" + ", ".join(f"'{o}'" for o in OBJECTS) + "]"
    roles = "[" + ", ".join(f"'{r}'" for r in ROLES) + "]"
    per_file = -(-decisions // files)
    for f in range(files):
        lo, hi = f * per_file, min(decisions, (f + 1) * per_file)
        con.execute(textwrap.dedent(f"""
            CREATE OR REPLACE TEMP TABLE generated AS
            WITH calls AS (
                SELECT i, 1760000000000000000 + i * 1000000 AS t, 'user' || (hash(i) % {USERS}) AS sub,
                       {objects}[1 + (hash(i * 7) % {len(OBJECTS)})::INTEGER] AS obj,
                       CASE WHEN hash(i * 13) % 4 = 0 THEN 'write' ELSE 'read' END AS act
                FROM range({lo}, {hi}) AS r(i)
            ),
            judged AS (
                SELECT *, {roles}[1 + (hash(sub) % {len(ROLES)})::INTEGER] AS role FROM calls
            ),
            decided AS (  -- the recorded policy (v1): _policy(candidate=False)
                SELECT *, act = 'read' OR role = 'admin' OR (role = 'editor' AND obj <> 'audit') AS allowed FROM judged
            )
            SELECT format('{{:032x}}', i) AS trace_id, format('{{:016x}}', i + 1) AS span_id, NULL AS parent_span_id,
                   'shop.Store/' || act AS name, 'SERVER' AS kind, t AS start_ns, t + 2000000 AS end_ns,
                   'UNSET' AS status_code, NULL::VARCHAR AS status_message, 'store-' || (i % 7) AS service,
                   json_object('service.name', 'store-' || (i % 7), 'host.name', 'host-' || (i % 7))::VARCHAR
                       AS resource,
                   json_object('rpc.system', 'grpc', 'rpc.service', 'shop.Store', 'rpc.method', act,
                       'rpc.grpc.status_code', CASE WHEN allowed THEN 0 ELSE 7 END, 'jit.token.present', true,
                       'jit.token.sub', sub, 'jit.token.verdict', 'valid', 'jit.policy.engine', 'casbin',
                       'jit.policy.id', 'store', 'jit.policy.version', 'v1',
                       'jit.policy.decision', CASE WHEN allowed THEN 'allow' ELSE 'deny' END,
                       'jit.policy.rule', CASE WHEN allowed THEN concat_ws(', ', 'p', role, obj, act) END,
                       'jit.policy.required', obj || ':' || act, 'jit.policy.granted', [role],
                       'jit.policy.request', [sub, obj, act], 'jit.policy.eval_s', 0.0001)::VARCHAR AS attributes,
                   '[]' AS events, '[]' AS links, 'opentelemetry.instrumentation.grpc' AS scope, 'bench' AS source
            FROM decided
        """))
        con.execute(f"COPY ({facts_file_sql('generated')}) TO '{folder / f'part-{f}.parquet'}' "
                    f"({FACTS_FILE_OPTIONS})")
    (out / "model.conf").write_text(MODEL)
    (out / "v1.csv").write_text(_policy(candidate=False))
    (out / "v2.csv").write_text(_policy(candidate=True))
    return out


CHILD = r"""
import json, resource, sys, time
data, out, policy = sys.argv[1], sys.argv[2], sys.argv[3]
started = time.perf_counter()
from jitrace.analyzer.replay import CasbinCandidate, replay, write
candidate = CasbinCandidate(f"{data}/model.conf", f"{data}/{policy}")
spent = [0.0]
def timed(request, granted):
    t = time.perf_counter()
    try:
        return candidate(request, granted)
    finally:
        spent[0] += time.perf_counter() - t
result = replay([f"{data}/spans"], timed, engine="casbin")
replayed = time.perf_counter()
write(result, out)
s = result.summary
print(json.dumps({"decisions": s["decisions"], "replayed": s["replayed"], "distinct": s["distinct_requests"],
                  "flips": s["flips"], "seconds": time.perf_counter() - started, "replay_s": replayed - started,
                  "evaluate_s": spent[0], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(data: Path, out: Path, policy: str) -> dict:
    return run_child(CHILD, str(data), str(out), policy, what="replay", timeout=3600)


ROUNDS = 3


def run(quick: bool) -> str:
    sizes = [100_000] if quick else [1_000_000]
    rounds = 1 if quick else ROUNDS
    rows = []
    with tempfile.TemporaryDirectory(prefix="jitrace-bench-replay-") as tmp:
        for n in sizes:
            data = Path(tmp) / f"data-{n}"
            gen_s = generate_apart("bench_replay", data, n)
            print(f"generated {n} decisions in {gen_s:.1f} s", file=sys.stderr, flush=True)
            runs = []
            for r in range(rounds):
                runs.append(_child(data, Path(tmp) / f"out-{n}-{r}", "v2.csv"))
                print(f"{n}: replay {runs[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
            rows.append((n, runs))
    lines = [
        f"| decisions | distinct requests | flips (allow→deny / deny→allow) | replay end to end (s), median of "
        f"{rounds} | all runs (s) | decisions/s | in pycasbin (s) | the rest: load, SQL, outputs (s) | "
        "pycasbin per request (µs) | every decision evaluated instead (s, estimated) | peak RSS (MB) |",
        "|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for _, runs in rows:
        first = runs[0]
        seconds = statistics.median(r["seconds"] for r in runs)
        evaluate = statistics.median(r["evaluate_s"] for r in runs)
        rest = statistics.median(r["seconds"] - r["evaluate_s"] for r in runs)
        per_request = evaluate / max(first["distinct"], 1)
        every = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        lines.append(
            f"| {first['decisions']:,} | {first['distinct']:,} | {first['flips']['allow_to_deny']:,} / "
            f"{first['flips']['deny_to_allow']:,} | {seconds:.2f} | {every} | {first['decisions'] / seconds:,.0f} | "
            f"{evaluate:.2f} | {rest:.2f} | {per_request * 1e6:,.0f} | {per_request * first['replayed']:,.0f} | "
            f"{max(r['peak_rss_mb'] for r in runs):,.0f} |")
    lines += [
        "",
        f"Generated Parquet as `jitrace collect` compacts it: one server span per decision, {USERS:,} principals "
        f"with one role each, {len(OBJECTS)} objects, reads and writes, each span recording its pycasbin decision "
        "under the recorded policy with `jit.policy.request` and `jit.policy.granted`. The candidate (the lab's "
        "model) lets editors write one more object and stops viewers reading one. `replay end to end` is "
        "`replay()` and `write()` (load, the decisions' SQL, each distinct request evaluated once by pycasbin, "
        "the flips, flips.parquet/.csv, replay.json, report.html) in a child process, imports included; `in "
        "pycasbin` is the time inside the candidate (its role bindings included), `the rest` everything else. "
        "`every decision evaluated instead` multiplies the measured cost per request by the decisions replayed: "
        "what evaluating each call, without de-duplication, would cost in pycasbin alone.",
    ]
    return "\n".join(lines)
