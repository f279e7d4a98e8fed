"""Idle cost: RSS of the whole supervisor (its own processes, not the services) and its CPU
over a quiet minute, five HTTP services probed every 5 s. All four tools run side by side, so
they share the same minute of the same machine."""

from __future__ import annotations

import contextlib
import time
from functools import partial
from pathlib import Path

import psutil

from bench.pods import CHILDREN, Marks, Pod, wait_for
from bench.probe import answers
from bench.results import Figure, Result, judge
from bench.scenarios import Context
from bench.scenarios.health import _sidecar
from bench.tools import VENV_BIN, Program, Setup, free_port, marked, setup_for

TOOLS = ("ours", "supervisord", "tini", "s6")
SERVICES = 5


def _programs(fifo: Path, first_port: int) -> list[Program]:
    programs = []
    for i in range(SERVICES):
        port = first_port + i
        programs.append(marked(fifo, f"web{i}", str(VENV_BIN / "python"),
                               str(CHILDREN / "http_child.py"), str(port),
                               health={"ready": f"http://127.0.0.1:{port}/",
                                       "live": f"tcp://127.0.0.1:{port}", "interval": "5s"}))
    return programs


def _supervisor_processes(tool: str, pod: Pod) -> list[psutil.Process]:
    """The supervisor itself, without the services: PID 1, plus the sidecar (supervisord) or
    the s6-supervise processes (s6)."""
    root = psutil.Process(pod.pid1)
    found = [root]
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(child.cmdline())
            if (tool == "supervisord" and "sidecar.py" in cmdline) or (
                    tool == "s6" and child.name() == "s6-supervise"):
                found.append(child)
    return found


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _rss_mib(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total / (1 << 20)


def idle(ctx: Context) -> list[Result]:
    window = ctx.size(60, 5)
    cpu = {tool: Figure(tool) for tool in TOOLS}
    rss = {tool: Figure(tool) for tool in TOOLS}
    for rep in range(max(1, min(ctx.reps, 3))):
        pods: dict[str, tuple[Pod, Setup, Marks]] = {}
        try:
            for index, tool in enumerate(TOOLS):
                directory = ctx.dir(f"idle-{tool}")
                marks = Marks(directory)
                programs = _programs(marks.path, 19100 + 100 * index)
                if tool == "supervisord":
                    urls = tuple(p.health["ready"] for p in programs)
                    programs.append(_sidecar(free_port(), str(directory / "supervisord.conf"),
                                             urls))
                setup = setup_for(tool, directory, programs)
                pods[tool] = (Pod(setup.argv, env=setup.env), setup, marks)
            for _pod, _setup, marks in pods.values():
                marks.wait_ups(SERVICES, timeout=30)
            for i in range(SERVICES):  # every service answers: probes pass from now on
                for index in range(len(TOOLS)):
                    url = f"http://127.0.0.1:{19100 + 100 * index + i}/"
                    wait_for(partial(answers, url), 20, url)
            time.sleep(2)  # start-up work done, first probe cycle passed
            watched = {tool: _supervisor_processes(tool, pod) for tool, (pod, _, _) in
                       pods.items()}
            before = {tool: _cpu_seconds(p) for tool, p in watched.items()}
            time.sleep(window)
            for tool, processes in watched.items():
                used = _cpu_seconds(processes) - before[tool]
                cpu[tool].values.append(100 * used / window)
                rss[tool].values.append(_rss_mib(processes))
        finally:
            for pod, _setup, marks in pods.values():
                pod.close()
                marks.close()
        ctx.say(f"idle rep {rep + 1}: " + ", ".join(
            f"{t} {cpu[t].values[-1]:.2f} % {rss[t].values[-1]:.1f} MiB" for t in TOOLS))
    rss["ours"].note = ("the engine process: supervisor, probes, health service and socket; "
                        "one CPython with aiohttp (client and server, TLS contexts), "
                        "supervisor's parser, prometheus-client, structlog, psutil and "
                        "watchdog loaded")
    rss["supervisord"].note = cpu["supervisord"].note = (
        "supervisord plus the aiohttp health sidecar (bench/children/sidecar.py) probing the "
        "same five URLs every 5 s")
    rss["tini"].note = "tini alone (the shell script that starts the services not counted)"
    rss["s6"].note = "s6-svscan and its 5 s6-supervise processes"
    results = [
        judge(Result("idle-rss", "idle RSS of the whole supervisor with health service", "MiB",
                     "≤ 45 MiB", list(rss.values())), 45),
        judge(Result("idle-cpu", f"idle CPU over {window:g} s, 5 services probed every 5 s "
                     "(% of one core)", "%", "≤ 0.5 %", list(cpu.values())), 0.5),
    ]
    return results
