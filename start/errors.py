"""Exit codes and the error types that carry them. Imports nothing, so anything may import it."""

from __future__ import annotations

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
