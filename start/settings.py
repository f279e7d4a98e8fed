"""What `coditect-start` was asked to do, once its flags and environment are read (`start.cli`).

Its own module so that everything after the command line (`start.early`, `start.engine`)
depends on the settings, never on the CLI that makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# What a reload's parse may take. A catalogue of 1000 services parses in ~2 s on one busy core,
# inside 64 MiB of address space; the limits are there to stop a runaway parse, not a big one.
RELOAD_SECONDS = 30.0
RELOAD_MEMORY_MIB = 256


@dataclass(frozen=True, slots=True)
class ReloadLimits:
    """What a reload's parse may take (start.reparse): CODITECT_RELOAD_TIMEOUT and
    CODITECT_RELOAD_MEMORY."""

    seconds: float = RELOAD_SECONDS
    memory_mib: int = RELOAD_MEMORY_MIB


@dataclass(frozen=True, slots=True)
class Settings:
    """The command line and its environment variables, resolved (defaults filled in)."""

    catalogue: Path
    overlay: Path | None
    home: Path
    template: Path | None
    run_dir: Path
    health_addr: str
    drain_timeout: float
    log_format: str
    check_only: bool
    termination_log: Path | None = None  # where the one-line reason for exiting goes
    reload_limits: ReloadLimits = field(default_factory=ReloadLimits)
