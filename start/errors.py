"""Exit codes, the error types that carry them, and how an invalid catalogue is told.
Imports nothing of ours, so anything may import it."""

from __future__ import annotations

import sys

EXIT_OK = 0  # every child stopped inside the drain deadline
EXIT_RUNTIME = 1  # a runtime failure, or the drain deadline had to SIGKILL what was left
EXIT_USAGE = 2  # bad command line
EXIT_CONFIG = 78  # invalid catalogue (EX_CONFIG): nothing was started


class ConfigError(Exception):
    """The catalogue is invalid. Carries every problem found, one line each."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ParseFailed(Exception):
    """A reload's parse gave no answer (start.reparse): `reason` is time_limit, memory_limit,
    too_large or crashed; the message is one line for people. The running catalogue stays."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def report_invalid(problems: list[str], outcome: str = "nothing started") -> None:
    """Every problem on stderr, one a line, and the verdict (exit code 78 follows)."""
    for problem in problems:
        sys.stderr.write(f"coditect-start: {problem}\n")
    sys.stderr.write(f"coditect-start: catalogue invalid ({len(problems)} "
                     f"problem{'s' if len(problems) != 1 else ''}); {outcome}\n")
    sys.stderr.flush()
