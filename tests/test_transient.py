"""`podctl run`: transient services against a real pod (real processes, signals and socket).

A transient service is the pod's child, not its caller's: supervised, logged and listed like
the catalogue's, stopped and removed by `podctl stop`, ended by the drain, kept by a reload,
and out of reach of whatever ends the run that asked for it (an IDE restart)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from healthz.model import State
from healthz.podctl import split_command
from healthz.run_request import MAX_BODY, parse_run_request
from start.strays import MARK
from tests.demo_support import podctl_command
from tests.health_support import FakePod, default_pod_services, running_faces
from tests.support import ROOT, RunningPod, get, pid_alive, wait_for, write_catalogue

DEADLINE = 30.0  # for one podctl command; a run waits for startsecs (1 s)

# The IDE stand-in, as the catalogue runs Theia.
CATALOGUE = {"theia": {"command": "sleep 1000", "startsecs": "0", "stopwaitsecs": "3"}}


class Pod:
    """A running pod and a podctl aimed at its socket."""

    def __init__(self, running: RunningPod, home: Path) -> None:
        self.running = running
        self.home = home
        self.socket = running.run_dir / "podctl.sock"

    def podctl(self, *argv: str, cwd: Path = ROOT,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **(env or {})}
        return subprocess.run([*podctl_command(), "--socket", str(self.socket), *argv],
                              capture_output=True, text=True, env=environment, cwd=cwd,
                              timeout=DEADLINE, check=False)

    def status(self) -> dict[str, dict[str, Any]]:
        done = self.podctl("status", "--json")
        return {s["name"]: s for s in json.loads(done.stdout)["services"]}

    def pid_of(self, name: str) -> int | None:
        pid = self.status().get(name, {}).get("pid")
        return int(pid) if pid is not None else None


@contextlib.contextmanager
def running_pod(tmp_path: Path) -> Iterator[Pod]:
    catalogue = write_catalogue(tmp_path / "catalogue", CATALOGUE)
    running = RunningPod(catalogue, tmp_path / "home")
    pod = Pod(running, tmp_path / "home")
    try:
        wait_for(lambda: pod.socket.exists() and pod.pid_of("theia"), 20,
                 lambda: f"the pod up, theia running\n{running.tail()}")
        yield pod
    finally:
        running.stop()


def started(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    assert "running" in done.stdout, done.stdout


def kill_recorded(*paths: Path) -> None:
    """What a failed test left behind, ended by the pids it wrote."""
    for path in paths:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(path.read_text()), signal.SIGKILL)


# -- against a real pod ---------------------------------------------------------------------


def test_run_is_listed_logged_and_gets_the_pods_environment(tmp_path: Path) -> None:
    """It runs in the caller's directory, with --env but nothing else of the caller's
    environment; its output is in its own log and on the pod's stdout; status marks it
    transient (and it does not make the pod unready); /metrics has it."""
    workdir = tmp_path / "project"
    workdir.mkdir()
    script = ("echo greeting=$GREETING; echo cwd=$(pwd); echo leaked=${CALLER_SECRET:-none}; "
              "exec sleep 1000")
    with running_pod(tmp_path) as pod:
        done = pod.podctl("run", "devserver", "--env", "GREETING=hello", "--",
                          "sh", "-c", script, cwd=workdir, env={"CALLER_SECRET": "s3cret"})
        started(done)
        log = pod.home / "logs" / "devserver.log"
        wait_for(lambda: log.exists() and "leaked=" in log.read_text(), 10, "its log")
        assert log.read_text().splitlines() == [
            "greeting=hello", f"cwd={workdir}", "leaked=none"]
        assert pod.running.events(service="devserver", message="greeting=hello")
        table = pod.podctl("status")
        assert table.returncode == 0, table.stderr  # not critical: the pod stays ready
        header, *rows = table.stdout.splitlines()
        assert header.split()[-1] == "KIND"
        assert any(r.split()[0] == "devserver" and r.split()[-1] == "transient" for r in rows)
        status = pod.status()
        assert status["devserver"]["transient"] is True
        assert status["theia"]["transient"] is False
        _, metrics = get(pod.running.health_port, "/metrics")
        assert 'coditect_pod_service_up{service="devserver"} 1.0' in metrics
        assert pod.running.events("transient_added", service="devserver")


def test_kill_9_restarts_it_and_stop_ends_it_with_its_setsid_child(tmp_path: Path) -> None:
    """A crash (kill -9) is restarted with the normal backoff; `podctl stop` ends it and a
    child that left its session, and removes it; the same name can then be run again."""
    child = tmp_path / "child.pid"
    script = f'setsid sleep 4711 & echo $! > {child}; exec sleep 1000'
    with running_pod(tmp_path) as pod:
        try:
            started(pod.podctl("run", "db", "--", "sh", "-c", script))
            first = pod.pid_of("db")
            assert first is not None
            os.kill(first, signal.SIGKILL)
            second = wait_for(lambda: (p := pod.pid_of("db")) != first and p, 15,
                              lambda: f"db respawned\n{pod.running.tail()}")
            assert pod.status()["db"]["restarts_by_reason"] == {"crash": 1}
            escaped = wait_for(lambda: child.exists() and child.read_text().strip()
                               and int(child.read_text()), 10, "its setsid child")
            assert os.getsid(escaped) != second  # really out of the service's session
            stopped = pod.podctl("stop", "db")
            assert stopped.returncode == 0, stopped.stderr
            assert "removed" in stopped.stdout
            assert not pid_alive(second)
            wait_for(lambda: not pid_alive(escaped), 10, "the setsid child gone")
            assert "db" not in pod.status()
            assert pod.running.events("transient_removed", service="db", why="stopped")
            started(pod.podctl("run", "db", "--", "sleep", "1000"))  # the name is free again
        finally:
            kill_recorded(child)


def test_an_ide_restart_does_not_touch_it(tmp_path: Path) -> None:
    """`podctl run` from inside the IDE's run (its mark in the environment, as in a Theia
    terminal): `podctl restart theia` ends a `setsid` escape of the IDE's run, but not the
    transient service the same shell started."""
    escape = tmp_path / "escape.pid"
    with running_pod(tmp_path) as pod:
        theia = pod.pid_of("theia")
        environ = Path(f"/proc/{theia}/environ").read_bytes().split(b"\0")
        mark = next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(MARK.encode()))
        in_ide = {MARK: mark}
        try:
            subprocess.run(["sh", "-c", f"setsid sleep 4712 >/dev/null 2>&1 & echo $! > {escape}"],
                           env={**os.environ, **in_ide}, check=True, timeout=DEADLINE)
            started(pod.podctl("run", "tmux", "--", "sleep", "1000", env=in_ide))
            transient = pod.pid_of("tmux")
            assert transient is not None
            restarted = pod.podctl("restart", "theia")
            assert restarted.returncode == 0, restarted.stderr
            wait_for(lambda: not pid_alive(int(escape.read_text())), 10,
                     "the IDE run's own escape ended")
            assert pid_alive(transient)
            assert pod.pid_of("tmux") == transient
        finally:
            kill_recorded(escape)


def test_a_reload_keeps_it_and_the_drain_ends_it(tmp_path: Path) -> None:
    """A reload (here one that adds a service) leaves the transient service running, same
    process; SIGTERM drains it with everything else, exit 0."""
    with running_pod(tmp_path) as pod:
        started(pod.podctl("run", "watcher", "--", "sleep", "1000"))
        pid = pod.pid_of("watcher")
        assert pid is not None
        write_catalogue(tmp_path / "catalogue", {
            **CATALOGUE, "api": {"command": "sleep 1000", "startsecs": "0"}})
        reloaded = pod.podctl("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "added api" in reloaded.stdout
        assert "removed watcher" not in reloaded.stdout
        wait_for(lambda: pod.pid_of("api"), 10, "api started")
        assert pod.pid_of("watcher") == pid
        assert list(pod.status()) == ["theia", "api", "watcher"]  # the catalogue's first
        pod.running.signal(signal.SIGTERM)
        assert pod.running.wait() == 0, pod.running.tail()
        assert not pid_alive(pid)


def test_a_catalogue_service_takes_its_name_at_a_reload(tmp_path: Path) -> None:
    """When the catalogue comes to name a transient service, the catalogue's wins: the
    transient one is stopped, and the reload says so."""
    with running_pod(tmp_path) as pod:
        started(pod.podctl("run", "api", "--", "sleep", "1000"))
        pid = pod.pid_of("api")
        assert pid is not None
        write_catalogue(tmp_path / "catalogue", {
            **CATALOGUE, "api": {"command": "sleep 1001", "startsecs": "0"}})
        reloaded = pod.podctl("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "transient api stopped" in reloaded.stdout
        assert not pid_alive(pid)
        assert pod.status()["api"]["transient"] is False


def test_refusals_are_one_line_with_their_exit_codes(tmp_path: Path) -> None:
    """A clash with a catalogue service or a running transient one: exit 1. A bad name, no
    command, no such executable or directory, a bad --env, the pod's own mark: exit 2.
    Nothing is started by any of them."""
    with running_pod(tmp_path) as pod:
        started(pod.podctl("run", "dev", "--", "sleep", "1000"))
        cases = {
            ("run", "theia", "--", "sleep", "1"): (1, "catalogue"),
            ("run", "dev", "--", "sleep", "1"): (1, "podctl stop dev"),
            ("run", "a/b", "--", "sleep", "1"): (2, "bad service name"),
            ("run", "x"): (2, "no command"),
            ("run", "x", "--", "no-such-program-here"): (2, "no executable"),
            ("run", "x", "--directory", str(tmp_path / "nowhere"), "--", "sleep", "1"):
                (2, "no directory"),
            ("run", "x", "--env", "1BAD=v", "--", "sleep", "1"): (2, "environment variable"),
            ("run", "x", "--env", "novalue", "--", "sleep", "1"): (2, "KEY=VALUE"),
            ("run", "x", "--env", f"{MARK}=theia/1", "--", "sleep", "1"): (2, MARK),
        }
        for argv, (code, words) in cases.items():
            done = pod.podctl(*argv)
            assert done.returncode == code, (argv, done.stderr)
            assert done.stderr.count("\n") == 1 and words in done.stderr, (argv, done.stderr)
            assert done.stderr.startswith("podctl"), done.stderr
        assert sorted(pod.status()) == ["dev", "theia"]
        failing = pod.podctl("run", "oops", "--", "sh", "-c", "exit 3")
        assert failing.returncode == 1
        assert "podctl stop oops" in failing.stderr  # it stays, retried: how to end it
        assert pod.podctl("stop", "oops").returncode == 0


# -- the request's form, without a pod ------------------------------------------------------


def test_the_command_is_everything_after_the_first_double_dash() -> None:
    assert split_command(["run", "x", "--env", "A=1", "--", "sh", "-c", "a -- b", "--env"]) == (
        ["run", "x", "--env", "A=1"], ["sh", "-c", "a -- b", "--env"])
    assert split_command(["status", "--", "theia"]) == (["status", "--", "theia"], [])


@pytest.mark.parametrize(("body", "words"), [
    ([], "JSON object"),
    ({"name": "../x", "command": ["ls"], "directory": "/"}, "bad service name"),
    ({"name": "x", "command": [], "directory": "/"}, "non-empty list"),
    ({"name": "x", "command": [""], "directory": "/"}, "empty"),
    ({"name": "x", "command": ["ls"], "directory": "tmp"}, "absolute"),
    ({"name": "x", "command": ["ls"], "directory": "/", "environment": {"A": 1}}, "strings"),
    ({"name": "x", "command": ["ls", "a\0b"], "directory": "/"}, "NUL"),
])
def test_malformed_requests_are_refused(body: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_run_request(body)


async def test_the_route_answers_each_refusal_in_json(tmp_path: Path) -> None:
    """POST /v1/run on the socket: not JSON 400, over the body limit 413, a good request 200
    with the new service's status; the TCP port has no such route (405: read-only)."""
    fake = FakePod(default_pod_services())
    good = {"name": "dev", "command": ["sleep", "1"], "directory": "/"}
    async with running_faces(fake, tmp_path) as faces:
        async def post(body: bytes) -> tuple[int, Any]:
            async with faces.unix.post("http://pod/v1/run", data=body) as resp:
                return resp.status, await resp.json()

        assert await post(b"{") == (400, {"error": "the body is not JSON"})
        big = json.dumps({**good, "command": ["echo", "x" * MAX_BODY]}).encode()
        status, answer = await post(big)
        assert status == 413 and "KiB" in answer["error"]
        status, answer = await post(json.dumps(good).encode())
        assert status == 200 and answer["ok"] is True, answer
        assert answer["service"]["transient"] is True
        assert answer["service"]["state"] == str(State.RUNNING)
        async with faces.tcp.post(faces.tcp_url + "/v1/run", data=b"{}") as resp:
            assert resp.status == 405
