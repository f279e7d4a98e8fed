"""One pod per run directory: a second real pod on the same `CODITECT_RUN` is refused before
it spawns anything, naming the one that runs; the lock goes with the pod that held it."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support import RunningPod, get, wait_for, write_catalogue


def marking_catalogue(directory: Path, mark: Path) -> Path:
    """One service that leaves `mark` behind the moment it is spawned."""
    return write_catalogue(directory, {
        "marker": {"command": f"/bin/sh -c 'touch {mark}; exec sleep 120'", "startsecs": "0"},
    })


def test_a_second_pod_on_the_same_run_directory_is_refused_before_it_spawns(
        tmp_path: Path) -> None:
    first_mark, second_mark = tmp_path / "first-spawned", tmp_path / "second-spawned"
    first = RunningPod(marking_catalogue(tmp_path / "one", first_mark), tmp_path / "home",
                       pid1=True)
    try:
        first.wait_event("health_listening", timeout=20)
        wait_for(first_mark.exists, 10, "the first pod's service")
        # Also PID 1 of its own namespace, as every container's is: a pid file could not
        # tell the two apart.
        second = RunningPod(marking_catalogue(tmp_path / "two", second_mark),
                            tmp_path / "home2", pid1=True,
                            extra_args=("--run-dir", str(first.run_dir)))
        try:
            code = second.wait(30)
        finally:
            second.stop()
        refusal = "".join(second.stderr)
        assert code == 1, refusal
        lines = refusal.strip().splitlines()
        assert len(lines) == 1, refusal
        assert "another pod already runs on the run directory" in lines[0]
        assert "pid 1 on host" in lines[0], lines[0]  # the running one, named
        assert str(first.run_dir / "pod.lock") in lines[0]
        assert "Traceback" not in refusal
        assert not second_mark.exists()  # nothing was spawned
        assert not (tmp_path / "home2").exists()  # nor `.coditect` touched
        status, _ = get(first.health_port, "/livez")
        assert status == 200  # the running pod is untouched
        assert (first.run_dir / "podctl.sock").exists()
    finally:
        first.stop()


def test_the_lock_goes_with_a_killed_pod(tmp_path: Path) -> None:
    """SIGKILL leaves the lock file behind, but not the lock: the next pod starts. (PID 1 of
    its namespace, so that the kernel ends its children with it.)"""
    first = RunningPod(marking_catalogue(tmp_path / "one", tmp_path / "a"), tmp_path / "home",
                       pid1=True)
    try:
        first.wait_event("health_listening", timeout=20)
        first.signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.stop()
    mark = tmp_path / "b"
    assert (first.run_dir / "pod.lock").exists()
    second = RunningPod(marking_catalogue(tmp_path / "two", mark), tmp_path / "home2",
                        extra_args=("--run-dir", str(first.run_dir)))
    try:
        second.wait_event("health_listening", timeout=20)
        wait_for(mark.exists, 10, "the second pod's service")
    finally:
        second.stop()
    assert second.process.returncode == 0, second.tail()
