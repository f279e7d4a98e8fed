"""How `podctl status` presents services: human units, an aligned table, colour on a TTY."""

from __future__ import annotations

TYPE_CHECKING = False  # spares the `typing` import at run time; mypy treats it as True
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, TextIO

HEADERS = ("NAME", "STATE", "READY", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "CPU", "MEM")

# SGR colours by lifecycle state (the values of healthz.model.State).
_GREEN, _YELLOW, _RED, _DIM = "32", "33", "31", "2"
STATE_COLOURS = {
    "running": _GREEN,
    "starting": _YELLOW,
    "waiting": _YELLOW,
    "stopping": _YELLOW,
    "backoff": _RED,
    "fatal": _RED,
    "stopped": _DIM,
    "exited": _DIM,
}


def use_colour(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Colour only for a person: stdout is a terminal and NO_COLOR is not set (no-color.org)."""
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def human_duration(seconds: float | None) -> str:
    """42s, 3m12s, 2h05m, 3d04h: two units at most, the second zero-padded."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def human_bytes(n: int | None) -> str:
    """512B, 12.3K, 12.3M, 1.5G: powers of 1024, as ps, top and htop print them."""
    if n is None:
        return "-"
    if n < 1024:
        return f"{n}B"
    value = float(n)
    for unit in "KMGTP":
        value /= 1024
        if value < 1024 or unit == "P":
            break
    return f"{value:.1f}{unit}"


def human_cpu(percent: float | None) -> str:
    return "-" if percent is None else f"{percent:.1f}%"


def row(service: Mapping[str, Any]) -> tuple[str, ...]:
    """One service of /v1/status as the table's cells (nulls and absent fields print `-`)."""
    pid = service.get("pid")
    return (
        str(service.get("name", "?")),
        str(service.get("state", "?")),
        "yes" if service.get("ready") else "no",
        "-" if pid is None else str(pid),
        human_duration(service.get("uptime_seconds")),
        str(service.get("restarts", 0)),
        service.get("last_exit") or "-",
        human_cpu(service.get("cpu_percent")),
        human_bytes(service.get("rss_bytes")),
    )


def kind_of(task: object, transient: object) -> str:
    """The KIND column's word: a one-shot task, a transient service (`podctl run`), or a
    service of the catalogue."""
    return "task" if task else "transient" if transient else "catalogue"


def render(services: Sequence[Mapping[str, Any]], colour: bool) -> str:
    """The aligned table, one line per service; widths count visible characters only. A KIND
    column last, only when a task or a transient service (`podctl run`) is listed: the
    columns before it never move, for scripts that read them."""
    headers: tuple[str, ...] = HEADERS
    rows = [row(s) for s in services]
    if any(s.get("transient") or s.get("kind") == "task" for s in services):
        headers = (*HEADERS, "KIND")
        rows = [(*cells, kind_of(s.get("kind") == "task", s.get("transient")))
                for cells, s in zip(rows, services, strict=True)]
    rows = [headers, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = []
    for index, cells in enumerate(rows):
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        if colour and index > 0 and cells[1] in STATE_COLOURS:
            padded[1] = f"\x1b[{STATE_COLOURS[cells[1]]}m{padded[1]}\x1b[0m"
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines) + "\n"
