"""Races and leftovers: a stop sent right after a start; grandchildren left by crashes."""

from __future__ import annotations

import time
import xmlrpc.client
from functools import partial
from pathlib import Path

from bench.pods import CHILDREN, Marks, Pod, wait_for
from bench.probe import http_request
from bench.results import Figure, Result, judge
from bench.scenarios import Context
from bench.tools import Program, Setup, marked, setup_for

STOPWAITSECS = 1  # a lost TERM costs this long, then SIGKILL


def _supervisor_rpc(setup: Setup) -> xmlrpc.client.ServerProxy:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, serverurl=f"unix://{setup.socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def _answers(setup: Setup) -> bool:
    """The control socket takes requests."""
    try:
        if setup.tool == "ours":
            return http_request("GET", "/livez", str(setup.socket), timeout=1)[0] == 200
        _supervisor_rpc(setup).supervisor.getState()
        return True
    except (OSError, xmlrpc.client.Error):
        return False


def _ours_trials(pod: Pod, setup: Setup, trials: int) -> tuple[int, list[float]]:
    sock = str(setup.socket)
    lost, took = 0, []
    for _ in range(trials):
        began = time.monotonic()
        status, body = http_request("POST", "/v1/services/x/start?wait=0", sock)
        assert 200 <= status < 300, body
        status, body = http_request("POST", "/v1/services/x/stop", sock)
        assert 200 <= status < 300, body
        took.append((time.monotonic() - began) * 1000)
        if pod.events("killed", service="x") and pod.events("killed", service="x")[-1][0] >= began:
            lost += 1
    return lost, took


def _supervisord_trials(setup: Setup, trials: int) -> tuple[int, list[float]]:
    rpc = _supervisor_rpc(setup)
    log = Path(str(setup.config)).parent / "supervisord.log"
    lost, took = 0, []
    for _ in range(trials):
        kills = log.read_text().count("with SIGKILL")
        began = time.monotonic()
        rpc.supervisor.startProcess("x", False)
        rpc.supervisor.stopProcess("x", True)
        took.append((time.monotonic() - began) * 1000)
        if log.read_text().count("with SIGKILL") > kills:
            lost += 1
    return lost, took


def stop_race(ctx: Context) -> list[Result]:
    """Start a service without waiting, then stop it at once, through each tool's control API;
    count the stops whose TERM was lost (the child had to be SIGKILLed at stopwaitsecs)."""
    trials = {"ours": int(ctx.size(100, 10)), "supervisord": int(ctx.size(30, 5))}
    figures = {tool: Figure(tool) for tool in trials}
    for tool, count in trials.items():
        directory = ctx.dir(f"race-{tool}")
        marks = Marks(directory)
        programs = [marked(marks.path, "x", "sleep", "1000", autostart=False,
                           stopwaitsecs=STOPWAITSECS)]
        setup = setup_for(tool, directory, programs)
        try:
            with Pod(setup.argv, env=setup.env) as pod:
                wait_for(partial(_answers, setup), 15, f"{tool}'s control socket")
                if tool == "ours":
                    lost, took = _ours_trials(pod, setup, count)
                else:
                    lost, took = _supervisord_trials(setup, count)
                reached = len(marks.ups("x"))
                if tool == "ours":
                    spawned = len(pod.events("spawned", service="x"))
                else:
                    log = Path(str(setup.config)).parent / "supervisord.log"
                    spawned = log.read_text().count("spawned: 'x'")
        finally:
            marks.close()
        figures[tool].values = [float(lost)]
        figures[tool].text = f"of {count}"
        figures[tool].note = (f"{count} trials, {spawned} spawns, {reached} of them got as far "
                              "as announcing themselves before the TERM; "
                              f"start→stop round trip median "
                              f"{sorted(took)[len(took) // 2]:.0f} ms")
        ctx.say(f"stop-race {tool}: {lost} of {count} lost the TERM")
    result = Result("stop-race", "stop right after start: TERMs lost (waited for SIGKILL)",
                    "count", "0", list(figures.values()),
                    limit="ours: `POST /v1/services/x/start?wait=0` then `POST …/stop` on the "
                    "control socket; supervisord: XML-RPC `startProcess(x, wait=False)` then "
                    "`stopProcess(x)` on its socket (what `supervisorctl` uses); stopwaitsecs=1.")
    return [judge(result, 0)]


def grandchildren(ctx: Context) -> list[Result]:
    """Five services crash twice each (10 crashes), each run leaving a `sleep 1001` in its
    process group; count those still alive once every service is up for good."""
    tools = ("ours", "supervisord", "s6")
    figures = {tool: Figure(tool) for tool in tools}
    for rep in range(max(1, min(ctx.reps, 3))):
        for tool in tools:
            directory = ctx.dir(f"grandchildren-{tool}")
            marks = Marks(directory)
            state = directory / "state"
            state.mkdir()
            programs = [Program(f"c{i}", (str(CHILDREN / "crasher"), str(state),
                                          str(marks.path), f"c{i}"))
                        for i in range(1, 6)]
            setup = setup_for(tool, directory, programs)
            try:
                with Pod(setup.argv, env=setup.env) as pod:
                    marks.wait_ups(15, timeout=30)
                    time.sleep(0.3)
                    left = 0
                    for pid in pod.tree():
                        try:
                            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                        except OSError:
                            continue
                        left += cmdline[:2] == [b"sleep", b"1001"]
                    figures[tool].values.append(float(left))
            finally:
                marks.close()
        ctx.say(f"grandchildren rep {rep + 1}: " + ", ".join(
            f"{t} {f.values[-1]:.0f}" for t, f in figures.items()))
    result = Result("grandchildren", "grandchildren left after 10 crashes", "count", "0",
                    list(figures.values()))
    return [judge(result, 0)]
