"""The engine's rare ways out, with real processes: a second stop signal during a drain, an
early-spawned child the engine did not adopt, a process that outlives SIGKILL (in a dead
run's group, or as a service itself) and so a drain that cannot complete.

A process "outlives SIGKILL" here the way it does under a debugger: this test traces it
(ptrace), so that once killed it stays a zombie that only its tracer may reap; the engine,
its parent, cannot. Nothing in the engine is mocked."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import ROOT, RunningPod, pid_alive, wait_for, write_catalogue

IGNORE_TERM = "sh -c 'trap \"\" TERM; while :; do sleep 0.05; done'"
PTRACE_SEIZE = 0x4206
_libc = ctypes.CDLL(None, use_errno=True)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="tracing another's child needs root")


@contextmanager
def traced(pid: int) -> Iterator[None]:
    """Trace `pid` (without stopping it) so that its zombie is this process's to reap; at the
    end, reap it (which hands it back to its parent) whatever state the test left it in."""
    if _libc.ptrace(PTRACE_SEIZE, pid, None, None) != 0:
        error = ctypes.get_errno()
        if error == errno.EPERM:  # a container without CAP_SYS_PTRACE, or a strict Yama
            pytest.skip(f"ptrace is not permitted here: {os.strerror(error)}")
        raise OSError(error, f"ptrace seize {pid}: {os.strerror(error)}")
    try:
        yield
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        # As its tracer we see the death first; __WALL: a traced child not our own.
        os.waitpid(pid, os.__dict__.get("__WALL", 0x40000000))


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def test_a_second_sigterm_during_the_drain_is_ignored_and_the_deadline_holds(
        tmp_path: Path) -> None:
    """A second SIGTERM while draining is reported and ignored: no second drain, and the
    deadline's SIGKILL still comes (exit 1)."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "stubborn": {"command": IGNORE_TERM, "stopwaitsecs": "60", "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home", extra_args=["--drain-timeout", "2"])
    try:
        child = pod.wait_event("spawned")[0]["pid"]
        pod.signal(signal.SIGTERM)
        pod.wait_event("stopping", service="stubborn")
        pod.signal(signal.SIGTERM)
        ignored = pod.wait_event("signal_ignored")[0]
        assert ignored["signal"] == "SIGTERM"
        assert pod.wait() == 1, pod.tail()
        assert len(pod.events("signal")) == 1
        assert len(pod.events("draining")) == 1
        assert pod.events("killed", cause="drain deadline")
        assert not pid_alive(child)
    finally:
        pod.stop()


UNADOPTED = """\
import dataclasses, os, pathlib
import start.early as early

_spawn_first_wave = early.spawn_first_wave


def _with_a_ghost(catalogue, base_env):
    spawned = _spawn_first_wave(catalogue, base_env)
    ghost = dataclasses.replace(catalogue.services[0], name="ghost")
    spawned["ghost"] = early.spawn(ghost, base_env)
    pathlib.Path(os.environ["GHOST_PID"]).write_text(str(spawned["ghost"].pid))
    return spawned


early.spawn_first_wave = _with_a_ghost
"""


def test_an_early_child_the_engine_does_not_adopt_is_killed(tmp_path: Path) -> None:
    """A child spawned before the engine under a name the boot does not know (failure
    injection: a `sitecustomize` adds it) is reported and killed, not left unsupervised."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(UNADOPTED)
    ghost_pid = tmp_path / "ghost-pid"
    catalogue = write_catalogue(tmp_path / "cat", {
        "sleeper": {"command": "sleep 1000", "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home",
                     env={"PYTHONPATH": f"{hook}{os.pathsep}{ROOT}",
                          "GHOST_PID": str(ghost_pid)})
    try:
        error = pod.wait_event("internal_error", 15)[0]
        assert "ghost was spawned early but not adopted; killed" in error["error"]
        ghost = int(ghost_pid.read_text())
        wait_for(lambda: not pid_alive(ghost), 10, "the unadopted child killed")
        pod.wait_event("booted")
        assert [e["service"] for e in pod.events("spawned")] == ["sleeper"]
        pod.signal(signal.SIGTERM)
        assert pod.wait() == 0, pod.tail()
    finally:
        pod.stop()


ENGINE_FAILS = """\
import os, pathlib
import start.early as early
import start.engine as engine

_spawn_first_wave = early.spawn_first_wave


def _recorded(catalogue, base_env):
    spawned = _spawn_first_wave(catalogue, base_env)
    pathlib.Path(os.environ["EARLY_PIDS"]).write_text(
        " ".join(str(p.pid) for p in spawned.values()))
    return spawned


def _fails(*args, **kwargs):
    raise KeyboardInterrupt  # the engine's boot interrupted before it adopted anything


early.spawn_first_wave = _recorded
engine.boot_and_run = _fails
"""


def test_early_children_are_killed_when_the_engine_fails_before_adopting_them(
        tmp_path: Path) -> None:
    """If the engine never boots (failure injection: its boot is interrupted), the first
    wave it would have adopted is killed on the way out, not left running."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(ENGINE_FAILS)
    early_pids = tmp_path / "early-pids"
    catalogue = write_catalogue(tmp_path / "cat", {
        "one": {"command": "sleep 1000", "startsecs": "0"},
        "two": {"command": "sleep 1000", "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home",
                     env={"PYTHONPATH": f"{hook}{os.pathsep}{ROOT}",
                          "EARLY_PIDS": str(early_pids)})
    try:
        assert pod.wait() == 1, pod.tail()  # EXIT_RUNTIME
        pids = [int(p) for p in early_pids.read_text().split()]
        assert len(pids) == 2
        # Killed, and (their parent gone) reaped by whoever adopted them.
        wait_for(lambda: not any(pid_alive(p) for p in pids), 10, "the first wave killed")
    finally:
        pod.stop()


# The service's process starts a grandchild in its group, writes its pid, then waits to be
# told (a file) to crash; its group is then SIGKILLed and emptied before the respawn.
CRASH_LEAVING_A_CHILD = ("sh -c 'sleep 1000 & echo $! > {pids}; "
                         "while [ ! -e {crash} ]; do sleep 0.05; done; exit 3'")


@needs_root
def test_a_leftover_that_outlives_sigkill_is_reported_and_the_respawn_goes_on(
        tmp_path: Path) -> None:
    """A dead run's group that still holds a process after SIGKILL (here a traced zombie)
    delays the respawn at most LEFTOVER_WAIT; then `leftovers_outlived_kill` and a respawn."""
    pids, crash = tmp_path / "grandchild", tmp_path / "crash"
    catalogue = write_catalogue(tmp_path / "cat", {
        "crasher": {"command": CRASH_LEAVING_A_CHILD.format(pids=pids, crash=crash),
                    "startsecs": "0", "autorestart": "true"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        first = pod.wait_event("spawned", service="crasher")[0]["pid"]
        grandchild = int(wait_for(lambda: pids.exists() and pids.read_text().strip(), 10,
                                  "the grandchild's pid"))
        with traced(grandchild):
            pids.unlink()
            crash.touch()
            pod.wait_event("exited", service="crasher")
            wait_for(lambda: zombie(grandchild), 10, "the grandchild killed, unreapable")
            left = pod.wait_event("leftovers_outlived_kill", 10, service="crasher")[0]
            assert left["group"] == first
            crash.unlink()
            spawned = pod.wait_event("spawned", 10, count=2, service="crasher")
            assert spawned[1]["pid"] != first
            assert zombie(grandchild)  # still there: the respawn did not wait for it
        pod.signal(signal.SIGTERM)
        assert pod.wait() == 0, pod.tail()
    finally:
        pod.stop()  # the respawned run's grandchild goes with its group


@needs_root
def test_a_service_that_cannot_be_reaped_after_sigkill_is_drain_incomplete(
        tmp_path: Path) -> None:
    """A service whose process, SIGKILLed at the drain deadline, cannot be reaped (here a
    traced process) ends the drain after KILL_REAP_GRACE: `drain_incomplete`, exit 1."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "stuck": {"command": "sleep 1000", "startsecs": "0", "stopwaitsecs": "60"}})
    pod = RunningPod(catalogue, tmp_path / "home", extra_args=["--drain-timeout", "1"])
    try:
        child = pod.wait_event("spawned", service="stuck")[0]["pid"]
        with traced(child):  # SIGTERM now only stops it (a signal-delivery stop): no exit
            pod.signal(signal.SIGTERM)
            pod.wait_event("killed", 10, service="stuck", cause="drain deadline")
            pod.wait_event("drain_incomplete", 10)
            assert pod.wait() == 1, pod.tail()
            assert zombie(child)
            assert not pod.events("exited", service="stuck")
            assert pod.events("drained")[0]["in_time"] is False
            assert pod.events("exit")[0]["code"] == 1
    finally:
        pod.stop()
