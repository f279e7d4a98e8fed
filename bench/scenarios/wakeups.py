"""Idle wake-ups: how often an idle demo pod's PID 1 is woken (voluntary context switches a
second, from /proc), beside how often its probes alone are due. Each probe wakes PID 1 at
least once (its timer; a web probe also for the connect and the answer), so the probes' rate is
the floor; anything well above it is PID 1 waking with nothing to do (until the heartbeat and
the periodic heap trim went: 3.2/s against 1.8/s of probes)."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from bench.pods import ROOT, Pod, wait_for
from bench.probe import answers
from bench.results import Figure, Result
from bench.scenarios import Context
from bench.scenarios.boot import _demo_env
from bench.tools import ours_setup

CATALOGUE = ROOT / "supervisor"
OVERLAY = ROOT / "demo" / "overlay.conf"
# Measured once the boot's deferred work is behind (its memory release is 10 s after boot,
# start.boot) and every probe has left its fast start for its interval.
IDLE_AFTER = 15.0  # seconds after the start
# Wake-ups a second PID 1 may have beyond its probes' (the children's output, a reply that
# comes after the loop went back to sleep); a timer of its own would take it past this.
OWN_WAKEUPS = 0.5


def voluntary_switches(pid: int, *, threads: bool) -> int:
    """voluntary_ctxt_switches of `pid`'s main thread, or summed over all of its threads."""
    tasks = sorted(Path(f"/proc/{pid}/task").iterdir()) if threads else [Path(f"/proc/{pid}")]
    total = 0
    for task in tasks:
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # a thread that ended meanwhile
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def probe_rate(env: dict[str, str]) -> float:
    """Probes due a second in the demo catalogue: each defined probe once per interval."""
    from start.catalogue import load as load_catalogue

    catalogue = load_catalogue(CATALOGUE, overlay=OVERLAY, environ=env)
    return sum(1 / spec.health.interval for spec in catalogue.services
               for probe in (spec.health.ready, spec.health.live) if probe.kind != "none")


def wakeups(ctx: Context) -> list[Result]:
    window = ctx.size(60, 10)
    main = Figure("ours")
    threads = Figure("ours, all threads")
    probes = Figure("probes due")
    for rep in range(1 if ctx.quick else min(ctx.reps, 3)):
        directory = ctx.dir("wakeups")
        setup = ours_setup(directory, [], catalogue=CATALOGUE, overlay=OVERLAY)
        (directory / "run").mkdir()
        env = {**setup.env, **_demo_env(directory)}
        with Pod(setup.argv, env=env) as pod:
            url = f"http://127.0.0.1:{setup.health_port}/readyz"
            wait_for(partial(answers, url, 0.5), 30, "ours /readyz", interval=0.05)
            pod.wait_event("watching_catalogue", 10)
            wait_for(lambda: time.monotonic() - pod.started > IDLE_AFTER, IDLE_AFTER + 5,
                     "the boot's deferred work", interval=0.5)
            pid1 = pod.pid1
            before = voluntary_switches(pid1, threads=False), voluntary_switches(pid1,
                                                                                 threads=True)
            began = time.monotonic()
            time.sleep(window)  # the measurement itself: a quiet minute, nothing asked of it
            took = time.monotonic() - began
            main.values.append((voluntary_switches(pid1, threads=False) - before[0]) / took)
            threads.values.append((voluntary_switches(pid1, threads=True) - before[1]) / took)
        probes.values.append(probe_rate({**env, "CODITECT_HOME": str(directory / "home"),
                                         "CODITECT_RUN": str(directory / "run")}))
        ctx.say(f"wakeups rep {rep + 1}: PID 1 {main.values[-1]:.2f}/s, all threads "
                f"{threads.values[-1]:.2f}/s, probes due {probes.values[-1]:.2f}/s")
    main.note = "PID 1's main thread (the event loop): /proc/PID/status voluntary_ctxt_switches"
    threads.note = "summed over /proc/PID/task/*: the loop plus watchdog's threads"
    probes.note = ("each [health:] probe once per interval (demo catalogue with its overlay): "
                   "the floor, one timer each")
    result = Result("wakeups", f"idle demo pod: PID 1's voluntary context switches over "
                    f"{window:g} s", "/s", f"≤ the probes' rate + {OWN_WAKEUPS:g}/s",
                    [main, threads, probes],
                    limit="each probe wakes the loop for its timer and, when its answer comes "
                    "after the loop went back to sleep, once more (and so does the service's "
                    "log line about it): the figure rises with the machine's load while PID 1 "
                    "arms no timer of its own (strace: between two probes' timers one "
                    "epoll_wait sleeps the whole gap)")
    floor = probes.median or 0.0
    result.met = main.median is not None and main.median <= floor + OWN_WAKEUPS
    return [result]
