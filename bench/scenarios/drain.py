"""Drain: SIGTERM to PID 1 → the namespace is gone, with idle and with TERM-ignoring children."""

from __future__ import annotations

import signal
import time

from bench.pods import Marks, Pod
from bench.results import Figure, Result, judge
from bench.scenarios import Context
from bench.tools import Setup, marked, setup_for

SETTLE = 0.5  # seconds after the last child is up: health listener bound, loops idle


def _term_to_exit(ctx: Context, tool: str, name: str, count: int, argv: tuple[str, ...],
                  stopwaitsecs: float,
                  signum: int = signal.SIGTERM) -> float:
    directory = ctx.dir(f"{name}-{tool}")
    marks = Marks(directory)
    programs = [marked(marks.path, f"s{i}", *argv, stopwaitsecs=stopwaitsecs)
                for i in range(1, count + 1)]
    setup: Setup = setup_for("floor" if tool == "floor" else tool, directory, programs)
    try:
        with Pod(setup.argv, env=setup.env) as pod:
            marks.wait_ups(count, timeout=15)
            time.sleep(SETTLE)
            sent = pod.signal(signum)
            gone = pod.wait_exit(timeout=30)
            return (gone - sent) * 1000
    finally:
        marks.close()


def term_idle(ctx: Context) -> list[Result]:
    """SIGTERM to PID 1 with 5 idle children, until `unshare` sees the namespace end."""
    tools = ("floor", "ours", "supervisord", "tini", "s6")
    figures = {tool: Figure(tool) for tool in tools}
    for rep in range(ctx.reps):
        for tool in tools:
            # The floor: SIGKILL to a plain shell as PID 1; the kernel ends the namespace.
            signum = signal.SIGKILL if tool == "floor" else signal.SIGTERM
            figures[tool].values.append(_term_to_exit(
                ctx, tool, "term", 5, ("sleep", "1000"), 10, signum))
        ctx.say(f"term-idle rep {rep + 1}: " + ", ".join(
            f"{t} {f.values[-1]:.1f} ms" for t, f in figures.items()))
    figures["floor"].note = "SIGKILL to a shell as PID 1: the kernel tearing the namespace down"
    figures["tini"].note = "`tini -g` forwards TERM to the script's process group"
    result = Result("term-idle", "SIGTERM → exit, 5 idle children", "ms", "≤ 100 ms",
                    list(figures.values()))
    return [judge(result, 100)]


def term_stubborn(ctx: Context) -> list[Result]:
    """SIGTERM to PID 1 with 3 children that ignore TERM, stopwaitsecs=2: SIGKILL at 2 s."""
    tools = ("ours", "supervisord")
    figures = {tool: Figure(tool) for tool in tools}
    stubborn = ("/bin/sh", "-c", "trap '' TERM; exec sleep 1000")
    for rep in range(max(1, min(ctx.reps, 3))):
        for tool in tools:
            figures[tool].values.append(_term_to_exit(
                ctx, tool, "stubborn", 3, stubborn, 2) / 1000)
        ctx.say(f"term-stubborn rep {rep + 1}: " + ", ".join(
            f"{t} {f.values[-1]:.2f} s" for t, f in figures.items()))
    result = Result("term-stubborn", "SIGTERM → exit, 3 children ignoring TERM, "
                    "stopwaitsecs=2", "s", "≤ 2.3 s", list(figures.values()),
                    limit="3 repetitions at most: supervisord needs several seconds each.")
    return [judge(result, 2.3)]
