"""``jitrace lab SCENARIO --out DIR [--calls N]``: run one fault scenario on a lab of real services.

Writes DIR/spans/ and DIR/logs/ (the collector's files), DIR/labels.jsonl (the injected cause of every denied
call, for ``jitrace score``), DIR/calls.jsonl (every call and its outcome) and DIR/params.json.
"""

from __future__ import annotations

import argparse

from jitrace.lab import runner, scenarios


def configure(parser: argparse.ArgumentParser) -> None:
    names = scenarios.SCENARIOS + scenarios.LOG_SCENARIOS + scenarios.REPLAY_SCENARIOS
    parser.add_argument("scenario", choices=names, metavar="SCENARIO", help=f"one of: {', '.join(names)}")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for spans, logs, labels and params")
    parser.add_argument("--calls", type=_positive, default=8, metavar="N",
                        help="injected denials per cause, and as many healthy calls (default 8)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the traffic mix (default 7)")
    parser.add_argument("--drift", choices=scenarios.DRIFTS, default="server",
                        help="clock_drift: whose clock is off, the server's, the client's or the issuer's")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--calls must be a whole number, not {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("--calls must be between 1 and 1000")
    return value


def describe(params: dict, out: str) -> str:
    """What a run did, in a few lines."""
    n = params["counts"]
    lines = [f"jitrace lab: {params['scenario']}: {n['calls']} calls, {n['denied']} denied "
             f"({n['labelled']} labelled) in {params['seconds']} s",
             f"  spans and logs: {out}/spans, {out}/logs; ground truth: {out}/labels.jsonl, {out}/params.json"]
    candidate = params.get("candidate")
    if candidate:
        lines.append(f"  recorded under {', '.join(sorted({r['policy'] for r in params['replicas']}))}; the candidate: "
                     f"jitrace replay {out}/spans --casbin {candidate['model']} {candidate['policy']}")
    if n["missed"] or n["unexpected_denials"] or n["errors"]:
        lines.append(f"  warning: {n['missed']} injected fault(s) not denied, {n['unexpected_denials']} healthy call(s)"
                     f" denied, {n['errors']} other error(s); see {out}/calls.jsonl and {out}/lab-run/*.log")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    params = runner.run(args.scenario, args.out, calls=args.calls, seed=args.seed, drift=args.drift)
    print(describe(params, args.out))
    return 0
