"""The lab: every scenario run on real services, scored against its ground truth; and `jitrace demo`'s wall time."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from jitrace.lab import demo, evaluate, runner, scenarios

DEMO_CALLS = 4  # jitrace demo's default
TITLE = "Lab scenarios: attribution accuracy against injected faults"


def _runs() -> list[tuple[str, str]]:
    return [(s, "server") for s in scenarios.SCENARIOS] + [("clock_drift", "client"), ("clock_drift", "issuer")]


def run(quick: bool) -> str:
    calls = 2 if quick else 8
    rows = []
    with tempfile.TemporaryDirectory(prefix="jitrace-bench-lab-") as tmp:
        for name, drift in _runs():
            label = name if name != "clock_drift" else f"clock_drift ({drift})"
            out = Path(tmp) / f"{name}-{drift}"
            started = time.perf_counter()
            params = runner.run(name, out, calls=calls, drift=drift, log=lambda _: None)
            lab_s = time.perf_counter() - started
            started = time.perf_counter()
            result = evaluate.evaluate(out)
            analyze_s = time.perf_counter() - started
            causes = result["score"]["causes"]
            recalls = [c["recall"] for c in causes.values() if c["support"]]
            accuracy = result["correct"] / result["injected"] if result["injected"] else 1.0
            rows.append(f"| {label} | {params['counts']['calls']} | {result['injected']} | {accuracy:.1%} | "
                        f"{min(recalls) if recalls else 1.0:.1%} | {result['healthy_reported']} | "
                        f"{lab_s:.1f} | {analyze_s:.1f} |")
        started = time.perf_counter()
        demo.demo(Path(tmp) / "demo", calls=DEMO_CALLS, quiet=True)
        demo_s = time.perf_counter() - started
    table = [
        f"Each scenario at {calls} injected denials per cause among as many healthy calls (`jitrace lab SCENARIO "
        f"--calls {calls}`), analyzed and scored against the lab's labels. Attributed: share of injected denials "
        "given the injected cause; min recall: the lowest recall over the run's causes; healthy reported: healthy "
        "calls the analyzer listed as denials.",
        "",
        "| scenario | calls | injected denials | attributed to the injected cause | min recall | healthy reported | "
        "lab run (s) | analysis (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"`jitrace demo` (mixed scenario, {DEMO_CALLS} denials per cause, analysis with report.html): "
        f"{demo_s:.0f} s wall time.",
    ]
    return "\n".join(table)
