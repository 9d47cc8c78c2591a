"""Logs in the analyzer: application JSON-lines log records loaded (records/s) and joined to denials with the log
patterns matched (denial_logs + attributions, records/s), on generated calls whose servers carry no jit facts
(so every denial is decided from its logs). Receiver-side log ingest is in bench_collect, per-format log loading in
bench_load.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

TITLE = "Analyzer: log records loaded and joined to denials"

T0_NS = 1_760_000_000_000_000_000
MESSAGES = ("request handled in 3 ms", "Signature has expired", "role viewer lacks inventory:write",
            "grant g-1 not active", "Invalid audience", "cache refreshed")


def _spans(con, calls: int) -> None:
    """``calls`` client/server pairs, 1 in 10 denied, no jit.* attributes on either side."""
    con.execute(f"""
        INSERT INTO span_rows
        SELECT format('{{:032x}}', i), format('{{:016x}}', 2 * i + side),
               CASE side WHEN 1 THEN format('{{:016x}}', 2 * i) END, 'jitlab.Inventory/Read',
               CASE side WHEN 0 THEN 'CLIENT' ELSE 'SERVER' END,
               {T0_NS} + i * 1000000 + side * 100000, {T0_NS} + i * 1000000 + 900000 - side * 100000, 'UNSET', NULL,
               CASE side WHEN 0 THEN 'gateway' ELSE 'orders' END,
               json_object('service.name', CASE side WHEN 0 THEN 'gateway' ELSE 'orders' END,
                           'host.name', CASE side WHEN 0 THEN 'g' ELSE 'o' END)::VARCHAR,
               json_object('rpc.system', 'grpc', 'rpc.service', 'jitlab.Inventory', 'rpc.method', 'Read',
                           'rpc.grpc.status_code', CASE WHEN i % 10 = 0 THEN 16 ELSE 0 END)::VARCHAR,
               '[]', '[]', NULL, 'bench'
        FROM range({calls}) AS r(i), range(2) AS s(side)
    """)


def _logs(path: Path, records: int, calls: int, rng: random.Random) -> None:
    """``records`` lines: 80% carry the trace context of a call (as the logging instrumentation injects it), 20% only
    a service and a time (a plain logger): those join by the time window."""
    with open(path, "w") as f:
        for _ in range(records):
            i = rng.randrange(calls)
            line = {"timestamp": (T0_NS + i * 1_000_000 + 200_000) / 1e9, "levelname": "WARNING",
                    "message": rng.choice(MESSAGES), "otelServiceName": "orders"}
            if rng.random() < 0.8:
                line |= {"otelTraceID": f"{i:032x}", "otelSpanID": f"{2 * i + 1:016x}"}
            f.write(json.dumps(line) + "\n")


def run(quick: bool) -> str:
    from jitrace.analyzer import load
    from jitrace.analyzer.steps import session

    rows = ["| calls | denials | log records | load (records/s) | join + patterns (records/s) | decided by logs |",
            "|---:|---:|---:|---:|---:|---:|"]
    sizes = [(20_000, 50_000)] if quick else [(20_000, 50_000), (200_000, 500_000)]
    for calls, records in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "app.jsonl"
            _logs(path, records, calls, random.Random(1))
            con = session.connect()
            _spans(con, calls)
            started = time.perf_counter()
            report = load.load_into(con, [str(path)], strict=True)
            load_s = time.perf_counter() - started
            steps = session.run_queries(con)
            join_s = steps["denial_logs"] + steps["attributions"]
            denials, by_logs = con.execute("SELECT count(*), count(*) FILTER (WHERE rule LIKE 'log_pattern:%') "
                                           "FROM attributions").fetchone()
            con.close()
        rows.append(f"| {calls:,} | {denials:,} | {report.logs:,} | {report.logs / load_s:,.0f} | "
                    f"{report.logs / join_s:,.0f} | {by_logs:,} |")
    return "\n".join(rows) + ("\n\nJoin: by trace/span id, else by service within 2 s (jitrace_log_window_s); "
                              "attributions' time includes its span rules.\n")
