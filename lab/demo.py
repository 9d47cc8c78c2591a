"""``jitrace demo [--out DIR]``: the whole pipeline on one machine, and a check that it worked.

Runs the ``mixed`` scenario on a lab of real services (every cause injected among healthy calls), collects their
spans and logs, analyzes them into DIR (default ``./jitrace-demo``), prints the report, scores it against the
lab's ground truth, and says where report.html is. The lab's raw files stay in DIR/lab. A run replaces the output
of an earlier demo in DIR and refuses a folder it did not write. It fails (exit 5) when no spans arrive or the
score is below 1.0: the demo is also the first run's proof that instrumentation, export and analysis work here.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from jitrace.analyzer import analyze, errors, score
from jitrace.analyzer.errors import UserError
from jitrace.lab import cli, runner

MARKER = ".jitrace-demo"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="./jitrace-demo", metavar="DIR",
                        help="folder for the analyzer's output (default ./jitrace-demo)")
    parser.add_argument("--calls", type=cli._positive, default=4, metavar="N",
                        help="injected denials per cause (default 4)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the traffic mix (default 7)")
    parser.add_argument("--watch", action="store_true",
                        help="attribute the denials live as the lab's spans arrive (as jitrace collect --watch), "
                             "then check that the live answers equal the batch run's")


def _lab_installed() -> str:
    """The preload library the lab skews clocks with; a one-line error naming the extra when the lab's parts are
    not installed."""
    library = runner.faketime_library()
    missing = [name for name, found in (("pycasbin", importlib.util.find_spec("casbin")), ("libfaketime", library))
               if not found]
    if missing:
        raise UserError(f"the demo's lab needs {' and '.join(missing)}: pip install 'jitrace[lab]'")
    assert library is not None
    return library


def _prepare(out: Path) -> None:
    """A new or empty folder, or one an earlier demo wrote (marked, or a lab run beside a summary)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: not a folder")
    ours = (out / MARKER).is_file() or ((out / "lab" / "params.json").is_file() and (out / "summary.json").is_file())
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise UserError(f"--out {out}: holds files jitrace demo did not write; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by jitrace demo: its outputs are replaced by the next demo\n")


def demo(out: str | Path, *, calls: int = 4, seed: int = 7, quiet: bool = False, watch: bool = False) -> dict:
    """Run the demo into ``out``; returns ``{"params", "summary", "score"}`` (and ``"live"``: the live answers
    equal the batch run's, with ``watch``). Raises ``UserError`` (exit 5) when no spans arrived, an attribution is
    wrong, or a live answer differs from the batch run's."""
    import pandas as pd  # only the demo needs pandas here: `jitrace analyze` starts without it

    out = Path(out)
    library = _lab_installed()
    _prepare(out)
    lab_dir = out / "lab"
    say = (lambda _: None) if quiet else print
    say(f"jitrace demo: running the mixed scenario (every cause, {calls} each) on a lab of real services; "
        f"clock skew through {library}")
    watcher = None
    if watch:
        import io
        import sys

        from jitrace.collect.watch import Watcher

        say("jitrace demo: --watch: each denial printed as its spans arrive (a correction when a later span "
            "changes the answer)")
        watcher = Watcher(out=io.StringIO() if quiet else sys.stdout)
        watcher.start()
    try:
        params = runner.run("mixed", lab_dir, calls=calls, seed=seed, log=say,
                            on_commit=watcher.announce if watcher is not None else None)
    finally:
        if watcher is not None:
            watcher.stop()  # the last tick: the stream is over
    say(cli.describe(params, str(lab_dir)))
    inputs = [str(p) for p in (lab_dir / "spans", lab_dir / "logs") if p.exists()]
    if not inputs:
        raise UserError(f"no spans arrived from the lab's services: see {lab_dir / 'lab-run'}/*.log "
                        "(is the OpenTelemetry distro installed? pip install jitrace)", errors.DEMO_FAILED)
    summary = analyze.analyze(inputs, out, quiet=quiet)
    live = None
    if watcher is not None:
        live = _live_equals_batch(watcher, out)
        watcher.close()
        say(f"\nLive (--watch): {watcher.summary().split(': ', 1)[1]}; the live answers "
            f"{'equal' if live else 'DIFFER FROM'} the batch run's")
    labels = pd.read_json(lab_dir / "labels.jsonl", lines=True, dtype={"trace_id": str})  # hex ids: never numbers
    result = score.score(pd.read_parquet(out / "attributions.parquet")[["trace_id", "cause"]],
                         labels[["trace_id", "cause"]])
    if not quiet:
        print("\nHow the analyzer did against the lab's ground truth (jitrace score):")
        print(score.format_text(result))
        print(f"\nHTML report: {(out / 'report.html').resolve()}")
        print(f"Notebooks: JITRACE_OUT={out.resolve()}")
    if live is False:
        raise UserError("the demo's check failed: the live attributions (--watch) differ from the batch run's",
                        errors.DEMO_FAILED)
    if summary["spans"] == 0 or result["accuracy"] < 1.0:
        raise UserError(f"the demo's check failed: {summary['spans']} spans, accuracy {result['accuracy']:.3f} "
                        f"over {params['counts']['labelled']} labelled denials (1.000 expected); "
                        f"the lab's files are in {lab_dir}", errors.DEMO_FAILED)
    return {"params": params, "summary": summary, "score": result, "live": live}


def _live_equals_batch(watcher, out: Path) -> bool:
    """Whether the watch's attributions equal analyze's, row for row (the evidence too)."""
    import duckdb

    columns = "trace_id, span_id, time, cause, rule, confidence, evidence, fix, principal, service, method"
    with duckdb.connect(str(out / "jitrace.duckdb"), read_only=True) as batch:
        expected = sorted(batch.execute(f"SELECT {columns} FROM attributions").fetchall())
    return sorted(watcher.attributions(columns)) == expected


def run(args: argparse.Namespace) -> int:
    demo(args.out, calls=args.calls, seed=args.seed, watch=args.watch)
    return 0
