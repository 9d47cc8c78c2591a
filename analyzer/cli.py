"""The ``jitrace`` command. Each subcommand lives in its own module, imported only when it runs.

A subcommand module provides ``configure(parser)`` (its arguments) and ``run(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jitrace.analyzer import errors

# name -> (module, the extra it needs, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "collect": ("jitrace.collect", "analyzer", "receive OTLP spans and logs into Parquet, by hour"),
    "analyze": ("jitrace.analyzer.analyze", "analyzer", "attribute every denial to a root cause"),
    "replay": ("jitrace.analyzer.replay", "lab",
               "evaluate recorded policy decisions under a candidate policy: the calls whose outcome changes"),
    "score": ("jitrace.analyzer.score", "analyzer", "precision and recall of attributions against ground-truth labels"),
    "clickhouse": ("jitrace.analyzer.engines.cli", "clickhouse",
                   "install-facts: store the analysis' facts in a ClickHouse otel_traces table"),
    "lab": ("jitrace.lab.cli", "lab", "run one fault scenario on a lab of real services"),
    "demo": ("jitrace.lab.demo", "lab", "run the mixed scenario, collect, analyze, print the report and check it"),
}


# What the extras install: a subcommand that finds one of these missing names the extra it needs.
OPTIONAL = {"duckdb", "pyarrow", "pandas", "numpy", "zstandard", "ijson", "casbin", "libfaketime", "chdb",
            "clickhouse_connect"}


def _missing_extra(name: str, exc: ModuleNotFoundError) -> errors.UserError | None:
    missing = (exc.name or "").split(".")[0]
    if missing not in OPTIONAL:
        return None
    return errors.UserError(f"needs {missing}, which is not installed: pip install 'jitrace[{SUBCOMMANDS[name][1]}]'")


def _load(name: str):
    """The subcommand's module; None where it does not exist yet. A library it needs that is missing is a one-line
    error naming the extra that installs it (the base install is the instrumentation alone)."""
    module_name = SUBCOMMANDS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None  # not built yet: `jitrace NAME` says so
        raise _missing_extra(name, exc) or exc from None


def _version() -> str:
    import importlib.metadata  # here: its import is a fixed cost of every command, and only --version reads it

    try:
        return importlib.metadata.version("jitrace")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class _Version(argparse.Action):
    """``--version``: the installed version, looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"jitrace {_version()}")
        parser.exit()


def _epilog() -> str:
    return "exit codes:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in errors.EXIT_CODES.items())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="jitrace", description="Why was this gRPC call denied?",
                                     epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Only the chosen subcommand's module is imported (grpc, DuckDB and the SDK are slow to import).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, (_, _, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_epilog(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == chosen:
            try:
                module = _load(name)
            except errors.UserError as err:
                print(f"jitrace {name}: error: {err}", file=sys.stderr)
                return err.exit_code
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
    except ModuleNotFoundError as exc:  # a library imported late, when the run needs it
        err = _missing_extra(args.command, exc)
        if err is None:
            raise
        print(f"jitrace {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
