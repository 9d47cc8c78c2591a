"""User-facing errors and exit codes: a user's mistake is one line on stderr and a documented exit code."""

from __future__ import annotations

# Exit codes of the `jitrace` command (README.md and `jitrace --help` list them: EXIT_CODES).
OK = 0
INTERNAL = 1  # a bug in jitrace: the one case that prints a traceback
USAGE = 2  # bad arguments, an unreadable or unknown input file
FAIL_ON = 3  # a CI gate: `analyze --fail-on CAUSE` found such denials, `replay --fail-on-flip KIND` such flips
BAD_RECORDS = 4  # some records could not be read (or decisions evaluated); the rest done, every output written
DEMO_FAILED = 5  # `jitrace demo`: no spans arrived, or an attribution did not match the lab's ground truth

EXIT_CODES = {
    OK: "success",
    INTERNAL: "a bug in jitrace (the only case with a traceback)",
    USAGE: "bad arguments, a missing extra, or an input that cannot be read or is of no known format",
    FAIL_ON: "a CI gate: analyze --fail-on CAUSE,... found denials of such a cause; replay --fail-on-flip KIND "
             "found flips of that kind",
    BAD_RECORDS: "some records could not be read (replay: or decisions evaluated): counted and reported, the rest "
                 "loaded, every output written",
    DEMO_FAILED: "demo: no spans arrived, or an attribution did not match the lab's ground truth",
}


class UserError(Exception):
    """A problem with the user's input or arguments. ``str(err)`` is the whole message: one line, no token."""

    exit_code = USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message.replace("\n", " "))
        if exit_code is not None:
            self.exit_code = exit_code
