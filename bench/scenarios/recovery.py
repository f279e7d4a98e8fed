"""Recovery: `kill -9` → respawned, `kill -9` → ready again, SIGSTOP (a hang) → replaced."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.request
from functools import partial
from pathlib import Path

from bench.pods import ROOT, Marks, Pod, wait_for
from bench.probe import answers, http_status
from bench.results import Figure, Result, judge
from bench.scenarios import Context
from bench.tools import STANDIN_ENV, VENV_BIN, Program, marked, setup_for

SERVICES = 5  # kills per pod: each service is killed once, so no restart backoff applies
STANDIN = ROOT / "demo" / "standins" / "api-standin"
PORTS = (18080, 18081, 18082)
SETTLE = 1.2  # s6-supervise waits a second between two starts of a service that died young


def _floor_spawns(ctx: Context, count: int) -> list[float]:
    """The floor of a respawn: a shell already waiting (on a FIFO) fork+execs the same child."""
    directory = ctx.dir("respawn-floor")
    marks = Marks(directory)
    go = directory / "go"
    os.mkfifo(go)
    mark = ROOT / "bench" / "children" / "mark"
    shell = subprocess.Popen(["/bin/sh", "-c", f"while read x; do '{mark}' '{marks.path}' "
                              "floor true & done <" + f"'{go}'"])
    samples = []
    try:
        with open(go, "wb", buffering=0) as trigger:
            for _ in range(count):
                sent = time.monotonic()
                trigger.write(b"x\n")
                up = marks.wait_ups(1, timeout=10, since=sent)[0]
                samples.append((up.at - sent) * 1000)
                time.sleep(0.02)
        shell.wait(10)
        return samples
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        marks.close()


def respawn(ctx: Context) -> list[Result]:
    """`kill -9` of a service's process → its replacement announces itself."""
    tools = ("ours", "supervisord", "s6")
    figures = {tool: Figure(tool) for tool in (*tools, "floor")}
    for rep in range(ctx.reps):
        for tool in tools:
            directory = ctx.dir(f"respawn-{tool}")
            marks = Marks(directory)
            programs = [marked(marks.path, f"s{i}", "sleep", "1000")
                        for i in range(1, SERVICES + 1)]
            setup = setup_for(tool, directory, programs)
            try:
                with Pod(setup.argv, env=setup.env) as pod:
                    marks.wait_ups(SERVICES, timeout=15)
                    time.sleep(SETTLE)
                    for program in programs:
                        ns_pid = int(marks.ups(program.name)[-1].text.split()[2])
                        target = pod.host_pid(ns_pid)
                        sent = time.monotonic()
                        os.kill(target, signal.SIGKILL)
                        up = marks.wait_ups(1, timeout=10, name=program.name, since=sent)[0]
                        figures[tool].values.append((up.at - sent) * 1000)
            finally:
                marks.close()
        figures["floor"].values.extend(_floor_spawns(ctx, SERVICES))
        ctx.say(f"respawn rep {rep + 1}: " + ", ".join(
            f"{t} {f.median:.1f} ms" for t, f in figures.items() if f.median is not None))
    figures["floor"].note = "a shell waiting on a FIFO fork+execs the same child on a write"
    result = Result("respawn", "`kill -9` → respawned (new child up)", "ms", "≤ 50 ms",
                    list(figures.values()),
                    limit=f"{SERVICES} services per pod, each killed once (no backoff applies).")
    return [judge(result, 50)]


def _standin(fifo: Path, name: str, port: int, health: dict[str, str]) -> Program:
    return marked(fifo, name, str(STANDIN), "--port", str(port), stopwaitsecs=5,
                  health=health)


def _standin_floor() -> float:
    """The stand-in's own start: exec to its health URL answering, no supervisor."""
    env = {**os.environ, **STANDIN_ENV, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    began = time.monotonic()
    process = subprocess.Popen([str(STANDIN), "--port", str(PORTS[0])], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: http_status(_url(PORTS[0]), timeout=0.5) == 200, 20, "the stand-in",
                 interval=0.002)
        return (time.monotonic() - began) * 1000
    finally:
        process.terminate()
        process.wait(10)


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api/v5/health"


def ready_again(ctx: Context) -> list[Result]:
    """`kill -9` of a stand-in with a readiness probe → ready again."""
    figures = {tool: Figure(tool) for tool in ("ours", "supervisord", "floor")}
    health = {"ready": _url(0), "interval": "5s"}
    for rep in range(ctx.reps):
        figures["floor"].values.append(_standin_floor())
        for tool in ("ours", "supervisord"):
            directory = ctx.dir(f"ready-again-{tool}")
            marks = Marks(directory)
            programs = [_standin(marks.path, f"api{i}", port, {**health, "ready": _url(port)})
                        for i, port in enumerate(PORTS)]
            setup = setup_for(tool, directory, programs)
            try:
                with Pod(setup.argv, env={**setup.env, **STANDIN_ENV}) as pod:
                    marks.wait_ups(len(PORTS), timeout=15)
                    for port in PORTS:
                        wait_for(partial(answers, _url(port)), 20, "stand-ins")
                    time.sleep(0.2)
                    for program, port in zip(programs, PORTS, strict=True):
                        ns_pid = int(marks.ups(program.name)[-1].text.split()[2])
                        target = pod.host_pid(ns_pid)
                        sent = time.monotonic()
                        os.kill(target, signal.SIGKILL)
                        if tool == "ours":
                            at = pod.wait_event("ready", 20, since=sent, service=program.name)
                            back = at[0][0]
                        else:  # supervisord has no readiness: the harness polls every 5 ms
                            marks.wait_ups(1, timeout=10, name=program.name, since=sent)
                            wait_for(partial(answers, _url(port), 0.5), 20,
                                     "the stand-in again", interval=0.005)
                            back = time.monotonic()
                        figures[tool].values.append((back - sent) * 1000)
            finally:
                marks.close()
        ctx.say(f"ready-again rep {rep + 1}: " + ", ".join(
            f"{t} {f.median:.0f} ms" for t, f in figures.items() if f.median is not None))
    figures["floor"].note = "the stand-in's own start (exec → health URL 200), no supervisor"
    figures["supervisord"].note = "no readiness probes: the harness polls the URL every 5 ms"
    floor = figures["floor"].median or 0.0
    result = Result("ready-again", "`kill -9` → ready again (aiohttp stand-in)", "ms",
                    "≤ stand-in start + one fast probe (50 ms)", list(figures.values()))
    return [judge(result, floor + 50)]


# The catalogue's defaults for a probe: what an operator gets without setting any. The quick run
# (CI: it only proves the harness works) uses a shorter one.
HANG_PROBE = (5.0, 3, 2.0)  # interval (s), failures, timeout (s)
HANG_PROBE_QUICK = (1.0, 2, 0.4)
_LIVE_PROBES = re.compile(r'^coditect_pod_probe_duration_seconds_count\{(?=[^}]*kind="live")'
                          r'(?=[^}]*service="api")[^}]*\} (\S+)$', re.MULTILINE)


def _live_probes_run(port: int) -> float | None:
    """How many liveness probes of `api` the engine has run, from its /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            found = _LIVE_PROBES.search(response.read().decode())
    except OSError:
        return None
    return float(found.group(1)) if found else None


def _next_live_probe(port: int, interval: float) -> float:
    """The moment (monotonic) a liveness probe of `api` is seen to finish."""
    seen = _live_probes_run(port)
    wait_for(lambda: _live_probes_run(port) not in (None, seen), interval + 10,
             "a liveness probe", interval=0.005)
    return time.monotonic()


def hang(ctx: Context) -> list[Result]:
    """SIGSTOP a stand-in (it hangs, its port stays open) → replaced by a new, ready one."""
    figures = {tool: Figure(tool) for tool in ("ours", "supervisord", "floor")}
    interval, failures, timeout = HANG_PROBE_QUICK if ctx.quick else HANG_PROBE
    health = {"ready": _url(PORTS[0]), "live": _url(PORTS[0]),
              "interval": f"{interval:g}s", "timeout": f"{timeout * 1000:g}ms",
              "failures": str(failures)}
    bounded = failures * interval + 5
    phases: list[list[float]] = []  # ours: liveness_failed, exited, spawned, ready
    # Three SIGSTOPs spread over the period have the same median as five: its middle.
    reps = max(1, min(ctx.reps, 3))
    for rep in range(reps):
        figures["floor"].values.append(_standin_floor())
        for tool in ("ours", "supervisord"):
            if tool == "supervisord" and rep > 0:
                continue  # "never" needs showing once
            directory = ctx.dir(f"hang-{tool}")
            marks = Marks(directory)
            programs = [_standin(marks.path, "api", PORTS[0], health)]
            setup = setup_for(tool, directory, programs)
            try:
                with Pod(setup.argv, env={**setup.env, **STANDIN_ENV}) as pod:
                    marks.wait_ups(1, timeout=15)
                    wait_for(lambda: http_status(_url(PORTS[0])) == 200, 20, "the stand-in")
                    # A real hang comes at any moment of the probe period, and where it lands
                    # decides up to one interval of the detection time. The SIGSTOPs are spread
                    # evenly over one period, counted from a liveness probe seen in /metrics
                    # (a fixed moment would measure one phase only), so the median is the
                    # middle of the period: a hang's expected detection time.
                    if tool == "ours":
                        pod.wait_event("ready", 20, service="api")
                        assert setup.health_port is not None
                        probed = _next_live_probe(setup.health_port, interval)
                    else:
                        probed = time.monotonic()
                    time.sleep(max(0.0, probed + interval * (rep + 0.5) / reps
                                   - time.monotonic()))
                    target = pod.host_pid(int(marks.ups("api")[-1].text.split()[2]))
                    sent = time.monotonic()
                    os.kill(target, signal.SIGSTOP)
                    if tool == "ours":
                        at = pod.wait_event("ready", failures * interval + 30,
                                            since=sent, service="api")
                        figures[tool].values.append(at[0][0] - sent)
                        phases.append([pod.events(e, service="api")[-1][0] - sent
                                       for e in ("liveness_failed", "exited", "spawned")]
                                      + [at[0][0] - sent])
                    else:
                        try:
                            marks.wait_ups(1, timeout=bounded, name="api", since=sent)
                            figures[tool].values.append(time.monotonic() - sent)
                        except TimeoutError:
                            figures[tool].text = f"never (not replaced within {bounded:g} s)"
                    with contextlib.suppress(ProcessLookupError):  # ours replaced it
                        os.kill(target, signal.SIGCONT)
            finally:
                marks.close()
        ctx.say(f"hang rep {rep + 1}: ours {figures['ours'].values[-1]:.2f} s (liveness failed, "
                "reaped, spawned, ready: " + ", ".join(f"{p:.3f}" for p in phases[-1]) + ")")
    figures["floor"].values = [v / 1000 for v in figures["floor"].values]
    figures["floor"].note = "the stand-in's own start"
    if phases:
        middle = sorted(phases, key=lambda p: p[-1])[len(phases) // 2]
        figures["ours"].note = (
            "phases of the median run after SIGSTOP: liveness failed {:.2f} s, old process "
            "reaped {:.2f} s, new one spawned {:.2f} s, ready {:.2f} s. A probe-based detector "
            "(the kubelet's too) sees a hang (failures − 1) × interval + timeout after the first "
            "probe that fails, which comes up to one interval after the hang: on average "
            "(failures − ½) × interval + timeout. The catalogue's default probe (every 5 s, 2 s "
            "timeout, 3 failures) is used ({} SIGSTOPs spread evenly over one period)".format(
                *middle, reps))
    floor = figures["floor"].median or 0.0
    limit = failures * interval + floor
    result = Result("hang", f"SIGSTOP (hang) → replaced and ready (liveness every "
                    f"{interval:g} s, {failures} failures, timeout "
                    f"{timeout * 1000:g} ms)", "s",
                    f"≤ failures × interval + restart ({limit:.2f} s)", list(figures.values()))
    return [judge(result, limit)]
