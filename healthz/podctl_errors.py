"""Exit codes of `podctl` and the one exception that carries a code and a line to `main`.

The codes are a contract (docs/PODCTL.md, `podctl --help`): scripts and probes branch on them.
"""

from __future__ import annotations

from healthz.names import RULE, is_service_name

OK = 0
FAILED = 1  # a verb failed; doctor found something required missing; pod not ready (is-ready)
USAGE = 2  # malformed command line, bad signal, bad service name
NOT_RUNNING = 3  # a named service (or any, for bare `status`) is not running or not ready
UNREACHABLE = 4  # pod unreachable, or an unknown service name


class PodctlError(Exception):
    """A failure a person can act on: one line on stderr, then exit with `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PodUnreachable(PodctlError):
    """No connection to the pod at all (no socket, refused, permission denied): a verb that
    can do without the pod (`validate`, `logs`) does it here instead, and says so."""

    def __init__(self, message: str) -> None:
        super().__init__(UNREACHABLE, message)


def check_name(name: str) -> str:
    """A service name as the control API accepts it (`healthz.names`, the same rule); anything
    else is a usage error, found before a name reaches a URL or a path: `logs` can never leave
    `$CODITECT_HOME/logs`."""
    if not is_service_name(name):
        raise PodctlError(USAGE, f"bad service name {name!r}: {RULE}")
    return name
