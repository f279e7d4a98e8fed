"""`.coditect` prepared before the services start; a home that cannot be prepared degrades the
pod, never stops it.

A full, read-only or otherwise unwritable home volume leaves the services able to run: their
logs then reach container stdout only (start.logs.ServiceLog counts what its file could not
take). What went wrong is kept here, one line per problem, for `/health` (warn), `/metrics`
(`coditect_pod_home_degraded`) and `podctl status`; the next boot with room completes the seeding,
because coditect_init only ever adds what is missing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_problems: list[str] = []
_span: list[float] = []  # wall-clock start and end of the last seeding (the timeline's first step)

# What the services still get when the home could not be prepared.
CONSEQUENCE = "the services start anyway; their logs go to stdout only until it is fixed"


def problems() -> tuple[str, ...]:
    """The home's problems found at boot, one line each (none: the home is fine)."""
    return tuple(_problems)


def seeding_span() -> tuple[float, float] | None:
    """When the seeding began and ended (wall clock), if it ran in this process."""
    return (_span[0], _span[1]) if len(_span) == 2 else None


def prepare_home(home: Path, template: Path | None) -> list[str]:
    """Seed or complete the home and check that its logs directory is writable; every problem
    as one line (also kept for problems()), never an exception for the volume's state."""
    # Boot speed: the engine imports this module for problems(); seeding is PID 1's first step.
    from coditect_init import InitError, prepare

    began = time.time()
    found: list[str] = []
    try:
        prepare(home, template)
    except InitError as error:
        found.append(f"{home} could not be prepared: {error}")
    except OSError as error:
        found.append(f"{home} could not be prepared: {error.strerror or error}")
    logs = home / "logs"
    try:
        logs.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as error:
        found.append(f"cannot create {logs}: {error.strerror or error}")
    else:
        if not os.access(logs, os.W_OK | os.X_OK):
            found.append(f"{logs} is not writable by uid {os.geteuid()}; fix its owner, mode "
                         "or mount")
    _problems[:] = found
    _span[:] = [began, time.time()]
    return found
