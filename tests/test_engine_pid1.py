"""PID 1 behaviour of the real engine: reaping, process groups, stop signals, drain."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.support import RunningPod, pid_alive, wait_for, write_catalogue, zombies_of

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="a new PID namespace needs root and unshare")

# A child that double-forks: its grandchild is orphaned at once and exits a little later.
# The grandchild records who adopted it, so the test knows the engine (and not init) reaped it.
# (No " ;" in a value: supervisord's dialect reads it as the start of a comment.)
ORPHANS = ("sh -c 'for i in 1 2 3; do (sh -c \"sleep 0.3; "
           "ps -o ppid= -p \\$\\$ >> {marker}\" &); done; exec sleep 1000'")


@pytest.mark.parametrize("pid1", [pytest.param(True, marks=needs_root), False],
                         ids=["pid1", "subreaper"])
def test_orphans_of_a_double_forking_child_are_reaped(tmp_path: Path, pid1: bool) -> None:
    """Grandchildren orphaned by a double fork are adopted and reaped: no zombie remains."""
    marker = tmp_path / "adopted-by"
    catalogue = write_catalogue(tmp_path / "cat", {
        "forker": {"command": ORPHANS.format(marker=marker), "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home", pid1=pid1)
    try:
        pod.wait_event("spawned", service="forker")
        wait_for(lambda: marker.exists() and len(marker.read_text().split()) == 3, 10,
                 "three orphans to report their parent")
        adopters = set(marker.read_text().split())
        # As PID 1 the namespace's init is us (pid 1); as a subreaper, our own pid.
        assert adopters == ({"1"} if pid1 else {str(pod.engine_pid)})
        wait_for(lambda: not zombies_of(pod.engine_pid), 5, "no zombies")
        pod.signal(signal.SIGTERM)
        assert pod.wait() == 0
        exit_event = pod.events("exit")[-1]
        assert exit_event["orphans_reaped"] >= 3
    finally:
        pod.stop()


def test_term_ignoring_children_are_killed_at_stopwaitsecs_in_parallel(tmp_path: Path) -> None:
    """Three TERM-ignoring children are SIGKILLed at stopwaitsecs, together, not one by one:
    all three are asked to stop before the first is killed."""
    ignore = "sh -c 'trap \"\" TERM; while :; do sleep 0.05; done'"
    catalogue = write_catalogue(tmp_path / "cat", {
        f"stubborn{i}": {"command": ignore, "stopwaitsecs": "1", "startsecs": "0"}
        for i in range(3)})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("spawned", count=3)
        pod.signal(signal.SIGTERM)
        code = pod.wait()
        assert code == 0, pod.tail()  # killed by their own stopwaitsecs, inside the deadline
        assert len(pod.events("killed", cause="stopwaitsecs")) == 3
        order = [e["event"] for e in pod.events() if e.get("event") in ("stopping", "killed")]
        assert order == ["stopping"] * 3 + ["killed"] * 3, order
    finally:
        pod.stop()


def test_drain_deadline_forces_kill_and_exit_code_1(tmp_path: Path) -> None:
    """When the drain deadline, not stopwaitsecs, has to SIGKILL, the exit code says so."""
    ignore = "sh -c 'trap \"\" TERM; while :; do sleep 0.05; done'"
    catalogue = write_catalogue(tmp_path / "cat", {
        "stubborn": {"command": ignore, "stopwaitsecs": "30", "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home", extra_args=["--drain-timeout", "1"])
    try:
        child = pod.wait_event("spawned")[0]["pid"]
        pod.signal(signal.SIGTERM)
        pod.signal(signal.SIGTERM)  # a second TERM must not skip the deadline's SIGKILL
        assert pod.wait() == 1
        assert pod.events("killed", cause="drain deadline")
        assert not pid_alive(child)
    finally:
        pod.stop()


def test_drain_stops_in_reverse_after_order(tmp_path: Path) -> None:
    """`front` runs after `back`; on SIGTERM, `front` has exited before `back` is signalled."""
    sleeper = "sh -c 'trap \"exit 0\" TERM; while :; do sleep 0.05; done'"
    catalogue = write_catalogue(
        tmp_path / "cat",
        {"back": {"command": sleeper, "startsecs": "0"},
         "front": {"command": sleeper, "startsecs": "0"},
         "other": {"command": sleeper, "startsecs": "0"}},
        health={"front": {"after": "back"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("spawned", count=3)
        spawned = [e["service"] for e in pod.events("spawned")]
        assert spawned.index("front") > spawned.index("back")
        pod.signal(signal.SIGTERM)
        assert pod.wait() == 0
        order = [(e["event"], e["service"]) for e in pod.events()
                 if e.get("event") in ("stopping", "exited")]
        assert order.index(("exited", "front")) < order.index(("stopping", "back"))
        # `other` is ordered by nothing: it is stopped at once, beside `front`.
        assert order.index(("stopping", "other")) < order.index(("stopping", "back"))
    finally:
        pod.stop()


def test_crashed_childs_grandchildren_are_gone_before_restart(tmp_path: Path) -> None:
    """A child that dies leaves a grandchild in its group; it is killed before the respawn."""
    pids = tmp_path / "grandchildren"
    command = f"sh -c 'sleep 1000 & echo $! >> {pids}; sleep 0.3; exit 3'"
    catalogue = write_catalogue(tmp_path / "cat", {
        "crasher": {"command": command, "startsecs": "0", "autorestart": "true"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("spawned", count=3, service="crasher", timeout=15)
        recorded = [int(p) for p in pids.read_text().split()]
        # Every grandchild but the current run's is gone.
        for pid in recorded[:-1]:
            assert not pid_alive(pid), f"grandchild {pid} outlived its parent's restart"
    finally:
        pod.stop()
    recorded = [int(p) for p in pids.read_text().split()]
    wait_for(lambda: not any(pid_alive(pid) for pid in recorded), 5,
             lambda: f"grandchildren {[p for p in recorded if pid_alive(p)]} gone after drain")


def test_missing_executable_is_one_line_exit_78_and_nothing_started(tmp_path: Path) -> None:
    """A command that does not exist: one line naming service and file, exit 78."""
    marker = tmp_path / "started"
    catalogue = write_catalogue(tmp_path / "cat", {
        "good": {"command": f"touch {marker}"},
        "typo": {"command": "/usr/bin/definitely-not-here --flag"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        assert pod.wait() == 78
        errors = [line for line in pod.stderr if "typo" in line]
        assert len(errors) == 1
        assert "conf.d/typo.conf" in errors[0] and "[program:typo]" in errors[0]
        assert "Traceback" not in "".join(pod.stderr)
        assert not marker.exists()
    finally:
        pod.stop()


def test_unreadable_catalogue_is_exit_78(tmp_path: Path) -> None:
    """A catalogue directory without supervisord.conf: one clear line, exit 78."""
    (tmp_path / "empty").mkdir()
    pod = RunningPod(tmp_path / "empty", tmp_path / "home")
    try:
        assert pod.wait() == 78
        assert any("supervisord.conf" in line and "not found" in line for line in pod.stderr)
        assert "Traceback" not in "".join(pod.stderr)
    finally:
        pod.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")
def test_user_key_runs_the_child_as_that_user(tmp_path: Path) -> None:
    """`user=nobody` (supervisord's key): the child runs with nobody's uid, gid, groups and
    HOME, and keeps none of root's groups."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    catalogue = write_catalogue(tmp_path / "cat", {
        "dropped": {"command": "sh -c 'echo $(id -u) $(id -g) $HOME $(id -G); "
                               "exec sleep 100'",
                    "user": "nobody", "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        line = wait_for(lambda: next((e["message"] for e in pod.events(None, service="dropped")
                                      if e.get("stream") == "stdout"), None), 10, "its line")
        uid, gid, home, *groups = line.split()
        assert (int(uid), int(gid), home) == (nobody.pw_uid, nobody.pw_gid, nobody.pw_dir)
        assert {int(g) for g in groups} == set(os.getgrouplist("nobody", nobody.pw_gid))
        assert 0 not in {int(g) for g in groups}  # none of root's groups kept
    finally:
        pod.stop()
