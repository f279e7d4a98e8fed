"""`podctl top`, `timeline`, `events` and `ports`: seeing the pod (docs/PODCTL.md).

Each asks one control route (docs/CONTROL_API.md) and prints a table for a person or the JSON
for a script. `top` on a terminal redraws every second until Ctrl-C or `q`.
"""

from __future__ import annotations

import sys

from healthz.podctl_errors import OK

TYPE_CHECKING = False  # spares the `typing` import at run time; mypy treats it as True
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    from healthz.podctl import Context

    Verb = Callable[[str, Callable[[Context], int], str], argparse.ArgumentParser]

REFRESH = 1.0  # seconds between redraws of `podctl top`
TOP_HEADERS = ("NAME", "STATE", "PID", "PROCS", "CPU%", "MEM", "THREADS", "FILES", "READ/s",
               "WRITE/s")


def _dump(ctx: Context, document: Any) -> None:
    import json

    json.dump(document, ctx.out, indent=2)
    ctx.out.write("\n")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in (headers, *rows)]
    return "\n".join(lines) + "\n"


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


# --- top -------------------------------------------------------------------------------------


def top_rows(document: Any, before: Any, seconds: float) -> list[list[str]]:
    """The table's rows; IO as rates against the reading `before` (dashes without one)."""
    from healthz.podctl_table import human_bytes

    previous = {r["name"]: r for r in (before or {}).get("services", [])}
    rows = []
    for row in [*document.get("services", []), document.get("unattributed") or {}]:
        if not row:
            continue
        old = previous.get(row["name"])
        rates = ["-", "-"]
        if old is not None and seconds > 0:
            rates = [human_bytes(max(0, int((row[k] - old[k]) / seconds))) + "/s"
                     for k in ("read_bytes", "write_bytes")]
        running = row["processes"] > 0
        rows.append([
            row["name"], row["state"] or "-", _dash(row["pid"]), str(row["processes"]),
            f"{row['cpu_percent']:.1f}" if running else "-",
            human_bytes(row["rss_bytes"]) if running else "-",
            str(row["threads"]) if running else "-", str(row["open_files"]) if running else "-",
            *rates,
        ])
    return rows


def cmd_top(ctx: Context) -> int:
    """Live per-service figures on a terminal; one JSON snapshot otherwise (or with --json)."""
    client = ctx.client()
    if ctx.args.json or not ctx.out.isatty():
        _dump(ctx, client.call("GET", "/v1/top"))
        return OK
    import time

    before: Any = None
    taken = 0.0
    with _Keys() as keys:
        try:
            while True:
                document = client.call("GET", "/v1/top")
                now = time.monotonic()
                rows = top_rows(document, before, now - taken)
                before, taken = document, now
                clock = time.strftime("%H:%M:%S")
                ctx.out.write("\x1b[H\x1b[2J")  # home and clear: a redraw, as top does
                ctx.out.write(f"podctl top {clock}  (q or Ctrl-C to quit)\n\n")
                ctx.out.write(_table(TOP_HEADERS, rows))
                ctx.out.flush()
                if keys.quit_within(REFRESH):
                    return OK
        except KeyboardInterrupt:
            return OK


class _Keys:
    """The terminal in cbreak mode while `top` runs, so `q` quits without Enter."""

    def __init__(self) -> None:
        self._saved: Any = None

    def __enter__(self) -> _Keys:
        if sys.stdin.isatty():
            import termios
            import tty

            self._saved = termios.tcgetattr(sys.stdin)
            tty.setcbreak(sys.stdin)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, self._saved)

    def quit_within(self, seconds: float) -> bool:
        """Wait up to `seconds` (the refresh period) for a key; True for `q`."""
        import select
        import time

        if self._saved is None:
            time.sleep(seconds)  # the redraw's period, not a wait for something to happen
            return False
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sys.stdin], [], [], left)
            if readable and sys.stdin.read(1) in ("q", "Q"):
                return True
        return False


# --- timeline --------------------------------------------------------------------------------


def _seconds(value: float | None, sign: str = "") -> str:
    return "-" if value is None else f"{sign}{value:.3f}s"


def render_timeline(document: Any) -> str:
    chain = document.get("critical_chain") or []
    total = document.get("ready_after")
    head = ("no service has been ready yet\n" if total is None else
            f"ready after {total:.3f}s; critical chain: {' -> '.join(chain)}\n")
    rows = [[
        ("* " if s["critical"] else "  ") + s["name"], _seconds(s["spawned"], "+"),
        _seconds(s["ready"], "+"), _seconds(s["took"]), ", ".join(s["after"]) or "-",
        _dash(s["waited_for"]),
    ] for s in document.get("services", [])]
    table = _table(("  NAME", "SPAWNED", "READY", "TOOK", "AFTER", "RELEASED BY"), rows)
    return head + table + "(* on the slowest path; times from the boot's first step)\n"


def cmd_timeline(ctx: Context) -> int:
    document = ctx.client().call("GET", "/v1/timeline")
    if ctx.args.json:
        _dump(ctx, document)
    else:
        ctx.out.write(render_timeline(document))
    return OK


# --- events ----------------------------------------------------------------------------------


def cmd_events(ctx: Context) -> int:
    """The engine's recent events as JSON lines; -f keeps following until Ctrl-C or SIGTERM."""
    import signal

    ctx.out.flush()
    previous = signal.signal(signal.SIGTERM, _interrupt) if ctx.args.follow else None
    try:
        query = "?follow=1" if ctx.args.follow else ""
        ctx.client().stream(f"/v1/events{query}", ctx.out.buffer, follow=ctx.args.follow)
        return OK
    except KeyboardInterrupt:
        if not ctx.args.follow:
            raise
        return OK
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a follow as Ctrl-C does


# --- ports -----------------------------------------------------------------------------------


def render_ports(document: Any) -> str:
    rows = []
    for p in document.get("ports", []):
        owner = p["service"] or "(not the pod's)"
        if p["via"] == "mark":
            owner += " (its run, outside the main tree)"
        rows.append([str(p["port"]), p["address"], owner, _dash(p["pid"]),
                     _dash(p["command"])])
    return _table(("PORT", "ADDRESS", "SERVICE", "PID", "COMMAND"), rows)


def cmd_ports(ctx: Context) -> int:
    document = ctx.client().call("GET", "/v1/ports")
    if ctx.args.json:
        _dump(ctx, document)
    else:
        ctx.out.write(render_ports(document))
    return OK


def add_verbs(verb: Verb) -> None:
    """Register the four verbs on podctl's parser."""
    sub = verb("top", cmd_top, "live CPU, memory, threads, open files and IO of each "
               "service's whole tree (one JSON snapshot when not on a terminal)")
    sub.add_argument("--json", action="store_true", help="print one snapshot as JSON")
    sub = verb("timeline", cmd_timeline, "the boot as a critical chain: when each service "
               "was spawned and ready, what it waited for, the slowest path")
    sub.add_argument("--json", action="store_true", help="print the timeline as JSON")
    sub = verb("events", cmd_events, "the engine's recent events as JSON lines (-f: follow)")
    sub.add_argument("-f", "--follow", action="store_true",
                     help="keep printing events as they happen, until Ctrl-C or SIGTERM")
    sub = verb("ports", cmd_ports, "the TCP ports listening in the pod and whose run holds each")
    sub.add_argument("--json", action="store_true", help="print the ports as JSON")
