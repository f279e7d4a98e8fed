"""Lifecycle corners of the real engine, in-process with real children: dependencies that never
come up, start_timeout beside startsecs, exec probes beside our reaper, reload during a drain,
reloads racing each other, and what a drain leaves behind."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from healthz.model import State
from start.service import Service
from tests.engine_harness import running_pod, until
from tests.support import pid_alive, write_catalogue

TRAPPING = "sh -c 'trap \"exit 0\" TERM; while :; do sleep 0.05; done'"
# Says `armed` once its trap is set: a signal before that would end it at once.
SLOW_STOP = "sh -c 'trap \"sleep 0.5; exit 0\" TERM; echo armed; while :; do sleep 0.05; done'"


async def _armed(logs: Path, name: str, count: int = 1) -> None:
    """Until the service's log shows `armed` `count` times (its signal traps are in place)."""
    def seen() -> bool:
        try:
            return (logs / f"{name}.log").read_text().count("armed") >= count
        except FileNotFoundError:
            return False

    await until(seen, 5, f"{name} armed")


def _ready_probe_runs(svc: Service) -> int:
    """How many times the service's readiness probe has run (0 before it starts)."""
    probe = svc.probe("ready")
    return probe.runs if probe is not None else 0


def _children_running(command: str) -> list[int]:
    """Our own child processes whose command line is exactly `command` (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and (cmdline == command or (not cmdline and command in stat)):
            found.append(int(entry.name))
    return found


async def test_crash_looping_dependency_releases_its_dependents(tmp_path: Path) -> None:
    """A dependency that dies at every start never gets ready; once its start_timeout is used
    up its dependents start anyway (each spawn's own timer is cut short by the exit)."""
    catalogue = write_catalogue(
        tmp_path / "cat",
        {"broken": {"command": "sh -c 'sleep 0.1; exit 1'", "startsecs": "1"},
         "front": {"command": TRAPPING, "startsecs": "0"}},
        health={"broken": {"start_timeout": "0.6s"}, "front": {"after": "broken"}})
    async with running_pod(catalogue, tmp_path / "logs", backoff_base=0.05,
                           backoff_cap=0.2) as (pod, events):
        front = pod.services["front"]
        await until(lambda: front.proc is not None, 5, "front spawned despite broken")
        assert events.named("starting_anyway", service="front")
        assert len(events.named("spawned", service="broken")) >= 2  # still retried


async def test_startsecs_longer_than_start_timeout_without_a_probe(tmp_path: Path) -> None:
    """No readiness probe: ready means past startsecs. A startsecs longer than start_timeout
    (a valid supervisord program) must reach RUNNING, not be killed as a failed start."""
    catalogue = write_catalogue(
        tmp_path / "cat", {"slow": {"command": TRAPPING, "startsecs": "1"}},
        health={"slow": {"start_timeout": "0.4s"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, events):
        slow = pod.services["slow"]
        await until(lambda: slow.state is State.RUNNING, 5, "RUNNING")
        assert slow.ready
        assert events.named("start_timeout") == []
        assert len(events.named("spawned")) == 1


async def test_exec_probes_never_race_the_reaper(tmp_path: Path) -> None:
    """An engine without an explicit exec runner still runs `exec:` probes through its reaper:
    asyncio's child watcher would lose exit statuses to waitpid(-1) (and call `true` exit 255)."""
    catalogue = write_catalogue(
        tmp_path / "cat", {"svc": {"command": TRAPPING, "startsecs": "0"}},
        health={"svc": {"ready": "exec:true", "interval": "0.05s"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, _events):
        svc = pod.services["svc"]
        await until(lambda: _ready_probe_runs(svc) >= 40, 20, "40 probe runs")
        probe = svc.probe("ready")
        assert probe is not None
        assert probe.consecutive_successes == probe.runs, probe.last


async def test_drain_leaves_no_exec_probe_process_behind(tmp_path: Path) -> None:
    """A drain returns only once the probes of the stopped services are stopped too: the
    hanging exec probe's process is killed and reaped (no zombie, no orphan)."""
    catalogue = write_catalogue(
        tmp_path / "cat", {"svc": {"command": TRAPPING, "startsecs": "0"}},
        health={"svc": {"ready": "exec:sleep 31", "timeout": "20s", "interval": "25s"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, _events):
        probe_pids = await _wait_for_children("sleep 31")
        assert await pod.drain(5)
        assert not any(Path(f"/proc/{pid}").exists() for pid in probe_pids), \
            "the exec probe's process outlived the drain"


async def _wait_for_children(command: str) -> list[int]:
    found: list[int] = []

    def seen() -> bool:
        found[:] = _children_running(command)
        return bool(found)

    await until(seen, 5, f"a child running {command!r}")
    return found


async def test_reload_during_a_drain_does_not_respawn(tmp_path: Path) -> None:
    """A SIGHUP while draining must not bring back a service the drain is stopping."""
    catalogue = write_catalogue(tmp_path / "cat",
                                {"svc": {"command": SLOW_STOP, "startsecs": "0"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, events):
        svc = pod.services["svc"]
        await _armed(tmp_path / "logs", "svc")
        (catalogue / "conf.d" / "svc.conf").write_text(
            f"[program:svc]\ncommand={SLOW_STOP}\nstartsecs=0\nstopwaitsecs=4\n")
        drain = asyncio.ensure_future(pod.drain(5))
        await until(lambda: svc.state is State.STOPPING, 5, "STOPPING")
        await pod.reload()
        assert await drain
        assert svc.proc is None
        assert len(events.named("spawned", service="svc")) == 1


async def test_concurrent_reloads_add_a_new_service_once(tmp_path: Path) -> None:
    """Two reloads at once (a file change and a SIGHUP) start an added service once; no
    process is left behind that the pod no longer knows."""
    catalogue = write_catalogue(tmp_path / "cat",
                                {"edit": {"command": SLOW_STOP, "startsecs": "0"}})
    conf = catalogue / "conf.d"
    async with running_pod(catalogue, tmp_path / "logs") as (pod, events):
        await _armed(tmp_path / "logs", "edit")
        (conf / "edit.conf").write_text(
            f"[program:edit]\ncommand={SLOW_STOP}\nstartsecs=0\nstopwaitsecs=4\n")
        (conf / "fresh.conf").write_text(f"[program:fresh]\ncommand={TRAPPING}\nstartsecs=0\n")
        await asyncio.gather(pod.reload(), pod.reload())
        spawned = [e["pid"] for e in events.named("spawned", service="fresh")]
        assert len(spawned) == 1, spawned
    for pid in spawned:
        assert not pid_alive(pid), f"fresh ({pid}) outlived the drain"


async def test_reload_stops_the_old_process_with_its_own_stopsignal(tmp_path: Path) -> None:
    """A reload that changes stopsignal stops the running process with the signal it was
    started under (as supervisord would), not the new one it may ignore."""
    on_int = ("sh -c 'trap \"\" TERM; trap \"exit 0\" INT; echo armed; "
              "while :; do sleep 0.05; done'")
    catalogue = write_catalogue(tmp_path / "cat", {"svc": {
        "command": on_int, "startsecs": "0", "stopsignal": "INT", "stopwaitsecs": "3"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, events):
        svc = pod.services["svc"]
        await _armed(tmp_path / "logs", "svc")
        (catalogue / "conf.d" / "svc.conf").write_text(
            f"[program:svc]\ncommand={TRAPPING}\nstartsecs=0\nstopsignal=TERM\n")
        ok, _ = await pod.reload()
        assert ok
        assert events.named("killed") == []  # SIGINT ended it; no wait for stopwaitsecs
        assert [e["signal"] for e in events.named("stopping", service="svc")] == ["SIGINT"]
        await until(lambda: svc.state is State.RUNNING, 5, "running the new spec")
        assert svc.spec.stopsignal == 15


async def test_reload_of_a_waiting_service_honours_its_new_after(tmp_path: Path) -> None:
    """A service waiting for a dependency that a reload removes from its `after` starts."""
    catalogue = write_catalogue(
        tmp_path / "cat",
        {"never": {"command": TRAPPING, "startsecs": "0"},
         "front": {"command": TRAPPING, "startsecs": "0"}},
        health={"never": {"ready": "tcp://127.0.0.1:9", "start_timeout": "60s"},
                "front": {"after": "never"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, _events):
        front = pod.services["front"]
        await until(lambda: front.state is State.WAITING, 5, "WAITING")
        (catalogue / "conf.d" / "front.conf").write_text(
            f"[program:front]\ncommand={TRAPPING}\nstartsecs=0\n")
        ok, _ = await pod.reload()
        assert ok
        await until(lambda: front.proc is not None, 3, "front spawned without `after`")


async def test_operator_restarts_do_not_use_up_the_restart_budget(tmp_path: Path) -> None:
    """restart_budget is about crash loops the kubelet should end; `podctl restart` and reloads
    by an operator must not make /livez fail."""
    catalogue = write_catalogue(
        tmp_path / "cat", {"svc": {"command": TRAPPING, "startsecs": "0"}},
        health={"svc": {"restart_budget": "1/1m"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, _events):
        for _ in range(3):
            await pod.restart_service("svc")
        snap = pod.snapshot().service("svc")
        assert snap is not None and snap.restarts_by_reason == {"manual": 3}
        assert not snap.budget_exhausted


async def test_exec_runner_cleans_up_when_cancelled_again_while_cleaning_up() -> None:
    """A probe cancelled twice (its loop stopped, then the task cancelled at shutdown) still
    closes its pipe, and its process is killed and reaped by our reaper."""
    from start.execprobe import ReaperExecRunner
    from start.reaper import Reaper

    loop = asyncio.get_running_loop()
    reaper = Reaper()
    reaper.install(loop)
    try:
        before = set(os.listdir("/proc/self/fd"))
        task = asyncio.ensure_future(ReaperExecRunner(reaper)(["sleep", "32"], 20))
        pids = await _wait_for_children("sleep 32")
        task.cancel()
        await asyncio.sleep(0)  # now inside its cleanup, waiting for the reaper
        task.cancel()
        await asyncio.wait({task})
        await until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 5,
                    "the probe process killed and reaped")
        assert set(os.listdir("/proc/self/fd")) - before == set(), "the pipe was left open"
    finally:
        reaper.uninstall()


async def test_readiness_turns_unready_after_failures_in_a_row(tmp_path: Path) -> None:
    """`failures` consecutive failed readiness probes make it unready (docs/LIFECYCLE.md), not the
    first one; a service that never passed is not ready at all."""
    flag = tmp_path / "ok"
    catalogue = write_catalogue(
        tmp_path / "cat", {"svc": {"command": TRAPPING, "startsecs": "0"}},
        health={"svc": {"ready": f"exec:test -e {flag}", "interval": "0.2s", "failures": "3"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, _events):
        svc = pod.services["svc"]
        await until(lambda: _ready_probe_runs(svc) >= 2, 5, "two probe runs")
        assert not svc.ready  # failed, and never passed since the spawn
        flag.touch()
        await until(lambda: svc.ready, 5, "ready")
        flag.unlink()
        probe = svc.probe("ready")
        assert probe is not None
        await until(lambda: probe.consecutive_failures >= 1, 5, "one failure")
        assert svc.ready, "one failed readiness probe made it unready"
        await until(lambda: probe.consecutive_failures >= 2, 5, "two failures")
        assert svc.ready
        await until(lambda: not svc.ready, 5, "unready")
        assert probe.consecutive_failures >= 3


async def test_a_passing_ready_probe_ends_starting_whatever_startsecs(tmp_path: Path) -> None:
    """With a readiness probe, its first pass makes the service running (startsecs=30 plays no
    part), and an exit after that is a crash, not a failed start."""
    catalogue = write_catalogue(
        tmp_path / "cat", {"svc": {"command": TRAPPING, "startsecs": "30"}},
        health={"svc": {"ready": "exec:true", "interval": "0.2s"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, events):
        svc = pod.services["svc"]
        await until(lambda: svc.state is State.RUNNING, 10, "RUNNING")
        assert svc.ready
        assert svc.send_signal(signal.SIGKILL)
        await until(lambda: events.named("backoff", service="svc"), 5, "the restart")
        assert [e["reason"] for e in events.named("backoff", service="svc")] == [
            "signal 9 (SIGKILL)"]
