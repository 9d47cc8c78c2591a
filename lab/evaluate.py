"""How the analyzer does on a lab run: its attributions scored against the run's ground truth.

Runs the analyzer's own steps (load, the SQL pipeline) in memory, without writing its outputs or the HTML report:
what the tests and the benchmark need.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from jitrace.analyzer import load, score
from jitrace.analyzer.steps import session


def evaluate(run_dir: str | Path) -> dict[str, Any]:
    """``{"attributions": DataFrame(trace_id, cause), "score": jitrace score's dict, "healthy_reported": n,
    "injected": n, "correct": n}`` for the lab run in ``run_dir``."""
    run_dir = Path(run_dir)
    inputs = [str(p) for p in (run_dir / "spans", run_dir / "logs") if p.exists()]
    con = session.connect()
    try:
        load.load_into(con, inputs, strict=True)
        session.run_queries(con)
        attributions = con.execute("SELECT trace_id, cause FROM attributions").df()
    finally:
        con.close()
    labels = pd.DataFrame(_jsonl(run_dir / "labels.jsonl"), columns=["trace_id", "cause"])
    healthy = {row["trace_id"] for row in _jsonl(run_dir / "calls.jsonl") if not row["expected"]}
    both = labels.merge(attributions, on="trace_id", how="left", suffixes=("", "_attributed"))
    return {
        "attributions": attributions,
        "score": score.score(attributions, labels),
        "healthy_reported": int(attributions["trace_id"].isin(healthy).sum()),
        "injected": len(labels),
        "correct": int((both["cause"] == both["cause_attributed"]).sum()),
    }


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
