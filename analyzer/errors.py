"""User-facing errors and exit codes: a user's mistake is one line on stderr and a documented exit code."""

from __future__ import annotations

# Exit codes of the `jitrace` command (documented in README.md).
OK = 0
INTERNAL = 1  # a bug in jitrace: the one case that prints a traceback
USAGE = 2  # bad arguments, an unreadable or unknown input file
FAIL_ON = 3  # `analyze --fail-on CAUSE`: denials of such a cause were found
BAD_RECORDS = 4  # some records could not be read; the rest loaded and every output was written


class UserError(Exception):
    """A problem with the user's input or arguments. ``str(err)`` is the whole message: one line, no token."""

    exit_code = USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message.replace("\n", " "))
        if exit_code is not None:
            self.exit_code = exit_code
