"""`/readyz` under load: ours (cached state, on the engine's loop) beside the alternative for a
supervisord pod, an aiohttp sidecar whose `/readyz` is an exec probe, `supervisorctl status`."""

from __future__ import annotations

import subprocess
import time
from functools import partial

from bench.load import fixed_rate, wrk
from bench.pods import CHILDREN, Marks, Pod, wait_for
from bench.probe import answers
from bench.results import Figure, Result, judge
from bench.scenarios import Context
from bench.tools import SUPERVISORCTL, VENV_BIN, Program, free_port, marked, setup_for

RATE = 1000  # requests a second for the latency figures


def _sidecar(port: int, config: str, probes: tuple[str, ...] = (), interval: float = 5) -> Program:
    argv = [str(VENV_BIN / "python"), str(CHILDREN / "sidecar.py"), "--port", str(port),
            "--supervisorctl-config", config, "--supervisorctl", SUPERVISORCTL,
            "--interval", f"{interval:g}"]
    for url in probes:
        argv += ["--probe", url]
    return Program("health-sidecar", tuple(argv), priority=1)


def _exec_probe_runs(config: str, runs: int) -> list[float]:
    """What one exec probe costs: `supervisorctl status` run back to back, wall ms each."""
    took = []
    for _ in range(runs):
        began = time.monotonic()
        subprocess.run([SUPERVISORCTL, "-c", config, "status"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        took.append((time.monotonic() - began) * 1000)
    return took


def readyz(ctx: Context) -> list[Result]:
    seconds = ctx.size(10, 2)
    reps = max(1, min(ctx.reps, 3))
    rps = {t: Figure(t) for t in ("ours", "supervisord")}
    p50 = {t: Figure(t) for t in ("ours", "supervisord")}
    p99 = {t: Figure(t) for t in ("ours", "supervisord")}
    notes: list[str] = []
    notes_wrk: list[str] = []
    for rep in range(reps):
        # ours: five idle services, /readyz on the TCP listener.
        directory = ctx.dir("readyz-ours")
        marks = Marks(directory)
        programs = [marked(marks.path, f"s{i}", "sleep", "1000") for i in range(1, 6)]
        setup = setup_for("ours", directory, programs)
        try:
            with Pod(setup.argv, env=setup.env):
                url = f"http://127.0.0.1:{setup.health_port}/readyz"
                wait_for(partial(answers, url), 20, "ours /readyz 200")
                run = wrk(url, seconds)
                rps["ours"].values.append(run.requests_per_second)
                paced = fixed_rate("127.0.0.1", int(setup.health_port or 0), "/readyz", RATE,
                                   seconds)
                p50["ours"].values.append(paced.percentile(50))
                p99["ours"].values.append(paced.percentile(99))
                notes.append(f"{paced.achieved_per_second:.0f} req/s achieved, "
                             f"{paced.errors} errors")
                notes_wrk.append(f"p99 {run.p99_ms:.1f} ms, {run.non_2xx} non-2xx")
        finally:
            marks.close()

        # supervisord + the sidecar (itself one of supervisord's programs).
        directory = ctx.dir("readyz-supervisord")
        marks = Marks(directory)
        port = free_port()
        config = str(directory / "supervisord.conf")
        programs = [marked(marks.path, f"s{i}", "sleep", "1000") for i in range(1, 6)]
        setup = setup_for("supervisord", directory, [*programs, _sidecar(port, config)])
        try:
            with Pod(setup.argv, env=setup.env):
                url = f"http://127.0.0.1:{port}/readyz"
                wait_for(partial(answers, url, 5), 30,
                         "the sidecar's /readyz 200")
                rps["supervisord"].values.append(wrk(url, seconds).requests_per_second)
                took = _exec_probe_runs(config, int(ctx.size(30, 5)))
                took.sort()
                p50["supervisord"].values.append(took[len(took) // 2])
                p99["supervisord"].values.append(took[min(len(took) - 1,
                                                          int(len(took) * 0.99))])
        finally:
            marks.close()
        ctx.say(f"readyz rep {rep + 1}: ours {rps['ours'].values[-1]:.0f} req/s, p99 "
                f"{p99['ours'].values[-1]:.2f} ms; sidecar {rps['supervisord'].values[-1]:.0f} "
                f"req/s")
    rps["ours"].note = f"wrk -t1 -c10 -d{seconds:g}s: " + "; ".join(notes_wrk)
    rps["supervisord"].note = "wrk against the aiohttp sidecar running `supervisorctl status`"
    p50["ours"].note = (f"open-loop client (bench/load.py) at {RATE} req/s for {seconds:g} s, "
                        "latency counted from when each request was due: " + "; ".join(notes))
    p50["supervisord"].note = (
        "no fixed rate is possible: one exec probe alone takes this long "
        "(`supervisorctl status`, run back to back)")
    throughput = judge(Result("readyz-rps", "`/readyz` under wrk: requests a second", "req/s",
                              "≥ 3,000 req/s", list(rps.values()), higher_is_better=True), 3000)
    median = Result("readyz-p50", f"`/readyz` p50 latency at {RATE} req/s", "ms", "–",
                    list(p50.values()))
    tail = judge(Result("readyz-p99", f"`/readyz` p99 latency at {RATE} req/s", "ms",
                        "≤ 10 ms", list(p99.values())), 10)
    return [throughput, median, tail]
