"""The options that change the analyzer's rules (the verifiers' leeway, the clock model's window, the log join),
read in one place: ``jitrace analyze`` and ``jitrace collect --watch`` take the same ones, so the live answers are
the batch answers under the same settings. Imports nothing heavy: ``jitrace collect``'s receivers parse them too."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

# option -> the SQL variable it sets (analyzer/steps/session.py VARIABLES)
_VARIABLES = (("leeway", "jitrace_leeway_s"), ("window", "jitrace_window_s"), ("log_window", "jitrace_log_window_s"))


def seconds(*, zero: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, positive (or also zero); nan, inf and negatives are one line."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number of seconds above 0"
                                             + (" or 0" if zero else ""))
        return value
    return parse


def add(parser: argparse.ArgumentParser, *, note: str = "") -> None:
    """--leeway, --window, --log-window and --log-patterns (``note`` ends each help text)."""
    parser.add_argument("--leeway", type=seconds(zero=True), default=None, metavar="SECONDS",
                        help="the verifiers' clock leeway (default 0 s, PyJWT's default)" + note)
    parser.add_argument("--window", type=seconds(zero=False), default=None, metavar="SECONDS",
                        help="time window of a clock-offset estimate (default 300 s)" + note)
    parser.add_argument("--log-window", type=seconds(zero=True), default=None, metavar="SECONDS",
                        help="a log record without trace ids joins a denial of its service within this many "
                             "seconds of the call's start (default 2 s)" + note)
    parser.add_argument("--log-patterns", action="append", default=[], metavar="FILE",
                        help="a CSV of log patterns (name,pattern,cause,confidence,description) tried before the "
                             "built-in queries/seeds/log_patterns.csv; repeatable" + note)


def settings(args: argparse.Namespace) -> dict[str, float]:
    """The SQL variables the options given set (analyzer/steps/session.py run_queries)."""
    return {variable: getattr(args, option) for option, variable in _VARIABLES if getattr(args, option) is not None}


def command_line(args: argparse.Namespace) -> list[str]:
    """The options given, as arguments again (for a process of its own: the watch)."""
    line = []
    for option, _ in _VARIABLES:
        if getattr(args, option) is not None:
            line += [f"--{option.replace('_', '-')}", repr(getattr(args, option))]
    for path in args.log_patterns:
        line += ["--log-patterns", path]
    return line
