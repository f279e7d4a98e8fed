"""The benchmark scenarios, one module per theme. Each `run(ctx)` returns `Result`s."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.results import Result


@dataclass
class Context:
    quick: bool
    reps: int
    scratch: Path  # a fresh directory per scenario run
    started: float = 0.0

    def size(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    def say(self, text: str) -> None:
        sys.stderr.write(f"[{time.monotonic() - self.started:6.1f}s] {text}\n")
        sys.stderr.flush()

    def dir(self, name: str) -> Path:
        path = self.scratch / name
        suffix = 0
        while path.exists():
            suffix += 1
            path = self.scratch / f"{name}-{suffix}"
        path.mkdir(parents=True)
        return path


Scenario = Callable[[Context], list[Result]]


def registry() -> dict[str, Scenario]:
    """Scenario name → function, in the order of the report's table."""
    from bench.scenarios import (
        attrib,
        boot,
        cli,
        drain,
        health,
        idle,
        logpump,
        races,
        recovery,
        wakeups,
    )

    return {
        "spawn": boot.spawn_five,
        "ready": boot.pod_ready,
        "term-idle": drain.term_idle,
        "term-stubborn": drain.term_stubborn,
        "respawn": recovery.respawn,
        "ready-again": recovery.ready_again,
        "hang": recovery.hang,
        "stop-race": races.stop_race,
        "grandchildren": races.grandchildren,
        "readyz": health.readyz,
        "idle": idle.idle,
        "wakeups": wakeups.wakeups,
        "logpump": logpump.logpump,
        "status": cli.status,
        "attrib": attrib.attrib,
    }
