"""What `coditect-start` was asked to do, once its flags and environment are read (`start.cli`).

Its own module so that everything after the command line (`start.early`, `start.engine`)
depends on the settings, never on the CLI that makes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
