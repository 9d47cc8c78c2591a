"""The ``jitrace`` command. Each subcommand lives in its own module, imported only when it runs.

A subcommand module provides ``configure(parser)`` (its arguments) and ``run(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jitrace.analyzer import errors

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("jitrace.analyzer.collect", "receive OTLP spans and logs, write Parquet partitioned by hour"),
    "analyze": ("jitrace.analyzer.analyze", "attribute every denial to a root cause"),
    "score": ("jitrace.analyzer.score", "precision and recall of attributions against ground-truth labels"),
    "lab": ("jitrace.lab.cli", "run one fault scenario on a lab of real services"),
    "demo": ("jitrace.lab.demo", "run the mixed scenario, collect, analyze and print the report"),
}


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        return None  # not built yet: `jitrace NAME` says so


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="jitrace", description="Why was this gRPC call denied?")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Only the chosen subcommand's module is imported (grpc, DuckDB and the SDK are slow to import).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = _load(module_name)
            if module is not None:
                module.configure(p)
    args = parser.parse_args(argv)
    if module is None:
        print(f"jitrace {args.command}: not available yet in this version", file=sys.stderr)
        return errors.USAGE
    try:
        return int(module.run(args))
    except errors.UserError as err:
        print(f"jitrace {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
