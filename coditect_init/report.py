"""What prepare() did (or, in a dry run, would do), as data and as the lines people read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["created", "kept", "added", "merged", "set aside"]


@dataclass(frozen=True, slots=True)
class Action:
    """One thing done to one path; `path` is relative to the home ("." is the home itself)."""

    kind: Kind
    path: str
    detail: str = ""

    def line(self) -> str:
        detail = f" — {self.detail}" if self.detail else ""
        return f"{self.kind:<9} {self.path}{detail}"


@dataclass(frozen=True, slots=True)
class Report:
    """Every action in order, and warnings a person should read."""

    home: Path
    dry_run: bool = False
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether anything was (or would be) written."""
        return any(a.kind != "kept" for a in self.actions)

    def lines(self, *, verbose: bool = False) -> list[str]:
        """One line per action; unless verbose, the files kept as they were are one count,
        because on every boot after the first that is nearly all of them."""
        shown = [a for a in self.actions if verbose or a.kind != "kept"]
        out = [a.line() for a in shown]
        kept = sum(1 for a in self.actions if a.kind == "kept")
        if kept and not verbose:
            out.append(f"{'kept':<9} {kept} file{'s' if kept != 1 else ''} as they were")
        counts = Counter(a.kind for a in self.actions)
        summary = ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "nothing to do"
        prefix = "dry run, nothing written: " if self.dry_run else ""
        out.append(f"{prefix}{self.home}: {summary}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())
