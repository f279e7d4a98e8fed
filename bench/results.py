"""What a scenario reports: one `Figure` per tool (every repetition kept), and a `Result`
that names the goal and says, from the figures, whether ours met it."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Figure:
    tool: str  # ours, supervisord, tini, s6, floor, …
    values: list[float] = field(default_factory=list)
    text: str = ""  # replaces the numbers when there are none ("never within 10 s")
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def describe(self, fmt: Callable[[float], str]) -> str:
        if not self.values:
            return self.text or "–"
        median = fmt(statistics.median(self.values))
        if len(self.values) == 1:
            return median + (f" {self.text}" if self.text else "")
        spread = f"{fmt(min(self.values))}–{fmt(max(self.values))}"
        return f"{median} ({spread})" + (f" {self.text}" if self.text else "")


@dataclass
class Result:
    key: str
    title: str
    unit: str  # "ms", "s", "req/s", "MiB", "%", "MB/s", "count"
    goal: str
    figures: list[Figure]
    higher_is_better: bool = False
    met: bool | None = None  # None: not judged (nothing to compare, or not run)
    limit: str = ""  # what limits ours when the goal is missed; caveats of the method
    skipped: str = ""  # why it could not run

    def figure(self, tool: str) -> Figure | None:
        return next((f for f in self.figures if f.tool == tool), None)

    def ratio(self, tool: str) -> float | None:
        """ours' median over the anchor's: < 1 is better for times, > 1 for rates."""
        ours, anchor = self.figure("ours"), self.figure(tool)
        if ours is None or anchor is None or ours.median is None or anchor.median is None:
            return None
        if anchor.median == 0:
            return None
        return ours.median / anchor.median

    def fmt(self, value: float) -> str:
        if self.unit == "ms":
            return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
        if self.unit == "s":
            return f"{value:.2f} s"
        if self.unit in ("req/s", "count"):
            return f"{value:,.0f}" + ("" if self.unit == "count" else " req/s")
        if self.unit == "MiB":
            return f"{value:.1f} MiB"
        if self.unit == "%":
            return f"{value:.2f} %"
        if self.unit == "/s":
            return f"{value:.2f}/s"
        if self.unit == "MB/s":
            return f"{value:.1f} MB/s"
        return f"{value:g} {self.unit}"


def judge(result: Result, limit: float, *, tool: str = "ours") -> Result:
    """Set `met` from ours' median against a numeric goal in the result's unit."""
    figure = result.figure(tool)
    if figure is None or figure.median is None:
        result.met = False if figure is not None else None
        return result
    result.met = (figure.median >= limit) if result.higher_is_better else (figure.median <= limit)
    return result
