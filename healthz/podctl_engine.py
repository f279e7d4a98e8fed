"""The engine, reached the only way `healthz` may reach it: as a subprocess.

`python -m start --check` reads and validates a catalogue the way `coditect-start` does, with
the same messages, and exits 78 when it is invalid (unknown keys, cycles in `after`, a command
that resolves to no executable, …). `-P` keeps the working directory off `sys.path`, so a
`start/` folder wherever podctl is run cannot stand in for the engine.
"""

from __future__ import annotations

import subprocess
import sys

TYPE_CHECKING = False  # spares the `typing` import at run time; mypy treats it as True
if TYPE_CHECKING:
    from collections.abc import Mapping

INVALID_CATALOGUE = 78
CHECK_TIMEOUT = 60.0


def check_command(catalogue: str | None, python: str | None = None) -> list[str]:
    command = [python or sys.executable, "-P", "-m", "start", "--check"]
    if catalogue is not None:
        command += ["--catalogue", catalogue]
    return command


def run_check(
    catalogue: str | None,
    *,
    capture: bool,
    env: Mapping[str, str] | None = None,
    python: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the engine's check; `capture` collects its output instead of letting it through.
    A hang past CHECK_TIMEOUT raises TimeoutExpired."""
    return subprocess.run(
        check_command(catalogue, python),
        stdin=subprocess.DEVNULL,
        env=None if env is None else dict(env),
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        text=True,
        errors="replace",
        timeout=CHECK_TIMEOUT,
        check=False,
    )
