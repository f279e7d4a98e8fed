"""`podctl status` beside `supervisorctl status`, each against its own pod of the same five
services: wall time of the whole command and its peak RSS (wait4's ru_maxrss)."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

from bench.pods import CHILDREN, Marks, Pod, wait_for
from bench.results import Figure, Result, judge
from bench.scenarios import Context
from bench.tools import Setup, marked, setup_for


def _timed(argv: list[str]) -> tuple[float, float, int]:
    """(wall ms, peak RSS MiB, exit code) of one run of `argv`, measured by a small
    intermediary (bench/children/rusage.py) that spawns it."""
    done = subprocess.run([sys.executable, "-I", "-S", str(CHILDREN / "rusage.py"), *argv],
                          capture_output=True, text=True, check=True)
    took, maxrss_kib, code = done.stdout.split()
    return float(took) * 1000, int(maxrss_kib) / 1024, int(code)


def _exits_0(argv: list[str]) -> bool:
    return _timed(argv)[2] == 0


def status(ctx: Context) -> list[Result]:
    runs = int(ctx.size(20, 3))
    tools = ("ours", "supervisord")
    wall = {t: Figure(t) for t in (*tools, "floor")}
    peak = {t: Figure(t) for t in tools}
    pods: dict[str, tuple[Pod, Setup, Marks]] = {}
    try:
        for tool in tools:
            directory = ctx.dir(f"status-{tool}")
            marks = Marks(directory)
            programs = [marked(marks.path, f"s{i}", "sleep", "1000") for i in range(1, 6)]
            setup = setup_for(tool, directory, programs)
            pods[tool] = (Pod(setup.argv, env=setup.env), setup, marks)
        for tool, (_pod, setup, marks) in pods.items():
            marks.wait_ups(5, timeout=30)
            wait_for(partial(_exits_0, setup.ctl("status")), 30,
                     f"{tool}: status exits 0", interval=0.1)
        for _ in range(runs):  # interleaved, so both see the same machine
            wall["floor"].values.append(_timed([sys.executable, "-c", "pass"])[0])
            for tool, (_pod, setup, _marks) in pods.items():
                took, rss, code = _timed(setup.ctl("status"))
                if code != 0:
                    raise RuntimeError(f"{setup.ctl('status')} exited {code}")
                wall[tool].values.append(took)
                peak[tool].values.append(rss)
    finally:
        for pod, _setup, marks in pods.values():
            pod.close()
            marks.close()
    ctx.say(f"status: ours {wall['ours'].median:.0f} ms, supervisorctl "
            f"{wall['supervisord'].median:.0f} ms")
    wall["supervisord"].note = "`supervisorctl -c … status`"
    wall["ours"].note = "`podctl --socket … status`"
    wall["floor"].note = ("the interpreter alone: `python -c pass` from the same venv (an "
                          "editable install adds an import hook to every start)")
    anchor = wall["supervisord"].median or 0.0
    return [
        judge(Result("status-wall", f"`podctl status` wall time ({runs} runs)", "ms",
                     "≤ half of supervisorctl's", list(wall.values())), anchor / 2),
        Result("status-rss", "`podctl status` peak RSS", "MiB", "–", list(peak.values())),
    ]
