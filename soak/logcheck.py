"""Every numbered line, counted in the log files: `$CODITECT_HOME/logs/<service>.log` and its
rotated backups (`.N` … `.1`, oldest first), for gaps and duplicates within each run.

A run's lines are `seq RUN N`, N from 0, and a run that ends short of SIGKILL writes
`seq RUN N end` last. So: a gap or a repeat anywhere is a lost or doubled line; a run that
starts above 0 lost its head, unless rotation discarded the oldest file (then only the run at
the very start of what is left may begin late); a run with no end line was SIGKILLed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ServiceLines:
    service: str
    files: int = 0
    lines: int = 0
    runs: int = 0
    ended: int = 0  # runs that wrote their end line
    gaps: int = 0  # numbers missing inside a run
    duplicates: int = 0
    lost_heads: int = 0  # lines missing before a run's first surviving line
    history_discarded: bool = False  # the oldest backup exists: rotation dropped older lines
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.gaps + self.lost_heads

    def summary(self) -> dict[str, Any]:
        return {"files": self.files, "lines": self.lines, "runs": self.runs,
                "ended": self.ended, "cut_by_sigkill": self.runs - self.ended,
                "lost": self.lost, "duplicates": self.duplicates,
                "history_discarded": self.history_discarded, "problems": self.problems[:5]}


def log_files(logs: Path, service: str) -> list[Path]:
    """The service's files, oldest first."""
    backups = sorted((p for p in logs.glob(f"{service}.log.*") if p.suffix[1:].isdigit()),
                     key=lambda p: int(p.suffix[1:]), reverse=True)
    current = logs / f"{service}.log"
    return [*backups, *([current] if current.exists() else [])]


def check_service(logs: Path, service: str, backups: int) -> ServiceLines:
    found = ServiceLines(service)
    files = log_files(logs, service)
    found.files = len(files)
    found.history_discarded = backups > 0 and (logs / f"{service}.log.{backups}").exists()
    runs: dict[str, list[int]] = {}
    first_run: str | None = None
    for path in files:
        with path.open("rb") as stream:
            for raw in stream:
                parts = raw.split()
                if len(parts) < 3 or parts[0] != b"seq":
                    continue
                try:
                    run, number = parts[1].decode(), int(parts[2])
                except (UnicodeDecodeError, ValueError):
                    found.problems.append(f"{path.name}: malformed {raw[:60]!r}")
                    continue
                found.lines += 1
                first_run = first_run or run
                runs.setdefault(run, []).append(number)
                if len(parts) > 3 and parts[3] == b"end":
                    found.ended += 1
    found.runs = len(runs)
    for run, numbers in runs.items():
        expected = numbers[0]
        if expected > 0 and not (found.history_discarded and run == first_run):
            found.lost_heads += expected
            found.problems.append(f"run {run} starts at {expected}")
        for number in numbers:
            if number == expected:
                expected += 1
            elif number < expected:
                found.duplicates += 1
                found.problems.append(f"run {run}: {number} again after {expected - 1}")
            else:
                found.gaps += number - expected
                found.problems.append(f"run {run}: {number} after {expected - 1}")
                expected = number + 1
    return found


def check(logs: Path, backups: dict[str, int]) -> dict[str, ServiceLines]:
    """Every service whose log holds numbered lines (nginx and the file monitor, real
    programs, write none)."""
    results = {name: check_service(logs, name, count) for name, count in backups.items()}
    return {name: found for name, found in results.items() if found.lines}
