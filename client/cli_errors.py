"""The one error the `todo` CLI reports: a single line and an exit status, never a traceback."""

from __future__ import annotations

# Exit statuses, so scripts can tell what went wrong without parsing the message.
EXIT_REFUSED = 1  # the server answered no: not found, invalid, someone else's, changed meanwhile
EXIT_USAGE = 2  # bad flags or local settings (argparse's own status too)
EXIT_AUTH = 3  # no token, or the server does not accept it
EXIT_UNREACHABLE = 4  # no answer: server down, wrong target, TLS mismatch, timeout


class CliError(Exception):
    """A problem to report in one line, with exit status `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
