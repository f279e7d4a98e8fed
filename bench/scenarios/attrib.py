"""What the run mark costs PID 1 with a big build in the pod: one service with 2,000
processes, half of them double-forked into sessions of their own (reparented to PID 1, found
only by their mark). Measured from PID 1's own CPU time (the scheduler's, /proc/PID/task/*/sched):

- a scrape of /metrics, the first (every process's environment read once) and later ones
  (one read of `stat` a process; the marks are remembered);
- the steady state: PID 1's CPU over a window while /metrics is scraped every few seconds
  (nothing scans /proc between requests);
- the stop of that run: TERM to the group and to every marked process, SIGKILL of what is
  left once the main process is reaped, the reaping of 2,000 children, until /proc holds
  nothing of the run.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import psutil

from bench.pods import Pod, wait_for
from bench.probe import answers, http_request
from bench.results import Figure, Result, judge
from bench.scenarios import Context
from bench.tools import Program, ours_setup

SCRAPE_EVERY = 5.0  # seconds between two scrapes in the steady state: a busy Prometheus
STEADY_GOAL = 1.0  # % of one core
BUILD = """\
i=0
while [ $i -lt {count} ]; do
  if [ $((i % 2)) -eq 0 ]; then (setsid sleep 100000 &); else sleep 100000 & fi
  i=$((i + 1))
done
touch {done}
exec sleep 100000
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` itself (all its threads, none of its children), to the
    microsecond from the scheduler's /proc/PID/task/*/sched where the kernel has it (utime and
    stime count in 10 ms ticks, coarser than one scrape)."""
    total = 0.0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        for task in tasks:
            for line in (task / "sched").read_text().splitlines():
                if line.startswith("se.sum_exec_runtime"):
                    total += float(line.split(":")[1]) / 1000
    except (OSError, ValueError):
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    return total


def processes(pod: Pod) -> int:
    """Live processes in the namespace besides PID 1."""
    count = 0
    for pid in pod.tree()[1:]:
        try:
            count += psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            continue
    return count


def _scrape(port: int) -> None:
    assert answers(f"http://127.0.0.1:{port}/metrics", 10), "/metrics did not answer"


def attrib(ctx: Context) -> list[Result]:
    count = int(ctx.size(2000, 200))
    window = ctx.size(60, 6)
    figures = {key: Figure("ours") for key in ("cold", "warm", "steady", "stop-cpu", "stop")}
    for rep in range(1 if ctx.quick else min(ctx.reps, 3)):
        directory = ctx.dir("attrib")
        done = directory / "built"
        script = directory / "build.sh"
        script.write_text(BUILD.format(count=count, done=done))
        setup = ours_setup(directory, [Program("build", ("sh", str(script)), stopwaitsecs=10)])
        assert setup.health_port is not None and setup.socket is not None
        with Pod(setup.argv, env=setup.env) as pod:
            wait_for(partial(answers, f"http://127.0.0.1:{setup.health_port}/livez", 0.5), 30,
                     "ours /livez", interval=0.05)
            wait_for(done.exists, 120, "the build's processes started", interval=0.2)
            wait_for(lambda: processes(pod) >= count + 1, 60, f"{count} processes",
                     interval=0.5)
            pid1 = pod.pid1
            _scrape_costs(pid1, setup.health_port, figures)
            before, began = cpu_seconds(pid1), time.monotonic()
            while time.monotonic() - began < window:
                _scrape(setup.health_port)
                time.sleep(SCRAPE_EVERY)  # the measurement: PID 1 left alone between scrapes
            took = time.monotonic() - began
            figures["steady"].values.append((cpu_seconds(pid1) - before) / took * 100)
            before, began = cpu_seconds(pid1), time.monotonic()
            status, body = http_request("POST", "/v1/services/build/stop", str(setup.socket),
                                        timeout=30)
            assert status == 200, body
            wait_for(lambda: processes(pod) == 0, 30, "nothing of the run left", interval=0.01)
            figures["stop"].values.append(time.monotonic() - began)
            time.sleep(0.5)  # PID 1 may still be checking for leftovers: count that too
            figures["stop-cpu"].values.append((cpu_seconds(pid1) - before) * 1000)
        ctx.say(f"attrib rep {rep + 1}: first scrape {figures['cold'].values[-1]:.0f} ms, "
                f"later {figures['warm'].values[-1]:.0f} ms, steady "
                f"{figures['steady'].values[-1]:.2f} %, stop {figures['stop'].values[-1]:.2f} s "
                f"({figures['stop-cpu'].values[-1]:.0f} ms of CPU)")
    what = f"{count} processes in one service, half reparented to PID 1"
    results = [
        Result("attrib-scrape-first", f"{what}: PID 1's CPU for the first /metrics scrape",
               "ms", "–", [figures["cold"]], limit="one pass over /proc reading every "
               "process's stat and environment (the run marks), plus the exposition"),
        Result("attrib-scrape", f"{what}: PID 1's CPU for a later /metrics scrape", "ms", "–",
               [figures["warm"]], limit="stat only: a process's mark is kept with its pid and "
               "start time"),
        judge(Result("attrib-steady", f"{what}: PID 1's CPU, steady state, /metrics every "
                     f"{SCRAPE_EVERY:g} s (% of one core)", "%", f"≤ {STEADY_GOAL:g} %",
                     [figures["steady"]], limit=f"over {window:g} s; nothing reads /proc "
                     "between requests, so without scrapes it is the idle pod's"), STEADY_GOAL),
        Result("attrib-stop", f"{what}: stop → nothing of the run left", "s", "–",
               [figures["stop"]]),
        Result("attrib-stop-cpu", f"{what}: PID 1's CPU for that stop", "ms", "–",
               [figures["stop-cpu"]], limit="TERM to the group and to each marked process "
               "(pidfd, start time checked), SIGKILL to what is left after the main process "
               "is reaped, reaping every child, and the leftovers check before a respawn"),
    ]
    return results


def _scrape_costs(pid1: int, port: int, figures: dict[str, Figure]) -> None:
    """PID 1's CPU for the first scrape and the median of five later ones, each past the
    census's and the readings' time to live (healthz.proctree), so each pays for a pass."""
    time.sleep(1.0)  # the build's own burst of reaping is over
    before = cpu_seconds(pid1)
    _scrape(port)
    figures["cold"].values.append((cpu_seconds(pid1) - before) * 1000)
    later = []
    for _ in range(5):
        time.sleep(1.1)  # past USAGE_TTL: the next scrape reads /proc again
        before = cpu_seconds(pid1)
        _scrape(port)
        later.append((cpu_seconds(pid1) - before) * 1000)
    figures["warm"].values.append(sorted(later)[len(later) // 2])

