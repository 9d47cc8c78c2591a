"""``jitrace demo [--out DIR]``: the whole pipeline on one machine.

Runs the ``mixed`` scenario on a lab of real services (every cause injected among healthy calls), collects their
spans and logs, analyzes them into DIR (default ``./jitrace-demo``), prints the report, scores it against the
lab's ground truth, and says where report.html is. The lab's raw files stay in DIR/lab.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from jitrace.analyzer import analyze, score
from jitrace.lab import cli, runner


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="./jitrace-demo", metavar="DIR",
                        help="folder for the analyzer's output (default ./jitrace-demo)")
    parser.add_argument("--calls", type=cli._positive, default=4, metavar="N",
                        help="injected denials per cause (default 4)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the traffic mix (default 7)")


def demo(out: str | Path, *, calls: int = 4, seed: int = 7, quiet: bool = False) -> dict:
    """Run the demo into ``out``; returns ``{"params", "summary", "score"}``."""
    out = Path(out)
    lab_dir = out / "lab"
    say = (lambda _: None) if quiet else print
    say(f"jitrace demo: running the mixed scenario (every cause, {calls} each) on a lab of real services")
    params = runner.run("mixed", lab_dir, calls=calls, seed=seed, log=say)
    say(cli.describe(params, str(lab_dir)))
    inputs = [str(p) for p in (lab_dir / "spans", lab_dir / "logs") if p.exists()]
    summary = analyze.analyze(inputs, out, quiet=quiet)
    result = score.score(pd.read_parquet(out / "attributions.parquet")[["trace_id", "cause"]],
                         pd.read_json(lab_dir / "labels.jsonl", lines=True)[["trace_id", "cause"]])
    if not quiet:
        print("\nHow the analyzer did against the lab's ground truth (jitrace score):")
        print(score.format_text(result))
        print(f"\nHTML report: {(out / 'report.html').resolve()}")
        print(f"Notebooks: JITRACE_OUT={out.resolve()}")
    return {"params": params, "summary": summary, "score": result}


def run(args: argparse.Namespace) -> int:
    demo(args.out, calls=args.calls, seed=args.seed)
    return 0
