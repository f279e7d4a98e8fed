"""Memory pressure: each service's oom_score_adj, set before exec, and an OOM kill told apart
from any other SIGKILL (start.oomkill, docs/LIFECYCLE.md "Out of memory").

The kill itself is real where the machine lets a test make a memory cgroup (root, cgroup v1's
memory controller, or v2's with a writable memory.max): a memory hog under a 192 MiB limit.
The reading of the cgroup's counter is also tested on files written here, for the layouts a
container may have (v1, v2, a cgroup namespace).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from healthz.model import OOM_KILLED
from healthz.podctl_client import PodClient
from start.oomkill import OomCounter, counter_file
from tests.support import PYTHON, RunningPod, get, wait_for, write_catalogue

# A child that starts a grandchild (once it runs: PID 1 may write the value just after the
# exec, docs/CATALOGUE.md): both must have the service's value.
SCORE = "sh -c 'sleep 0.3; sleep 120 & wait'"


# -- reading the counter ----------------------------------------------------------------------


def _events(directory: Path, name: str, kills: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    other = "oom_kill_disable 0\nunder_oom 0\n" if name == "memory.oom_control" else "oom 2\n"
    path.write_text(f"{other}oom_kill {kills}\n")
    return path


def test_the_counter_is_found_for_each_layout(tmp_path: Path) -> None:
    """v2 (pure and hybrid), v1, and a cgroup namespace where the mount is the pod's cgroup
    although /proc names a path; None where no file says oom_kill."""
    pure = _events(tmp_path / "pure" / "kubepods" / "pod1", "memory.events", 0)
    assert counter_file("0::/kubepods/pod1\n", tmp_path / "pure") == pure
    v1 = _events(tmp_path / "v1" / "memory" / "docker" / "abc", "memory.oom_control", 0)
    hybrid = "5:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n"
    assert counter_file(hybrid, tmp_path / "v1") == v1
    unified = _events(tmp_path / "hy" / "unified" / "docker" / "abc", "memory.events", 0)
    _events(tmp_path / "hy" / "memory" / "docker" / "abc", "memory.oom_control", 0)
    assert counter_file(hybrid, tmp_path / "hy") == unified
    namespaced = _events(tmp_path / "ns", "memory.events", 0)
    assert counter_file("0::/kubepods/pod1/ctr\n", tmp_path / "ns") == namespaced
    (tmp_path / "old" / "memory").mkdir(parents=True)
    (tmp_path / "old" / "memory" / "memory.oom_control").write_text("under_oom 0\n")
    assert counter_file("4:memory:/\n", tmp_path / "old") is None
    assert counter_file("", tmp_path / "nothing") is None


def test_each_rise_of_the_counter_explains_one_death(tmp_path: Path) -> None:
    """A SIGKILL death is an OOM kill when the count rose since the last look; a rise is taken
    once, and an unreadable file says no rather than guess."""
    path = _events(tmp_path, "memory.events", 4)
    counter = OomCounter(path)
    assert counter.available
    assert not counter.took()  # kills before the pod began are not its
    _events(tmp_path, "memory.events", 5)
    assert counter.took()
    assert not counter.took()  # the same rise, a second death: an ordinary SIGKILL
    _events(tmp_path, "memory.events", 7)
    assert counter.took()
    path.unlink()
    assert not counter.took()
    assert not OomCounter(None).took() and not OomCounter(None).available


# -- oom_score_adj, with the real engine --------------------------------------------------------


def score(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def long_sleep(pid: int) -> int | None:
    """The child of `pid` that is SCORE's `sleep 120`, once it is there."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/cmdline").read_bytes() == b"sleep\x00120\x00":
                return int(child)
    return None


def test_oom_score_adj_is_the_services_and_its_descendants(tmp_path: Path) -> None:
    """Set in the child before exec, so what it starts inherits it: raised (no privilege
    needed; lowering is the next test's), as another user, and left alone without the key."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "ide": {"command": SCORE}, "door": {"command": SCORE},
        "other": {"command": SCORE, "user": "nobody"}, "plain": {"command": SCORE}},
        {"ide": {"oom_score_adj": "1000"}, "door": {"oom_score_adj": "300"},
         "other": {"oom_score_adj": "700"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        wanted = {"ide": 1000, "door": 300, "other": 700, "plain": score(os.getpid())}
        for name, value in wanted.items():
            [spawned] = pod.wait_event("spawned", service=name)
            pid: int = spawned["pid"]
            grandchild = wait_for(functools.partial(long_sleep, pid), 10, "the sleep")
            assert (score(pid), score(grandchild)) == (value, value), name
        assert not pod.events("oom_score_adj_refused")
    finally:
        pod.stop()


def test_lowering_without_cap_sys_resource_keeps_the_pods_value_and_says_so(
        tmp_path: Path) -> None:
    """A pod without CAP_SYS_RESOURCE (a container's default) cannot lower a service below the
    floor its runtime set: the service runs at the pod's value, said once, not refused."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    catalogue = write_catalogue(tmp_path / "cat", {
        "door": {"command": "sh -c 'sleep 0.2; exit 1'", "startsecs": "0",
                 "autorestart": "true"},
        "ide": {"command": SCORE}},
        {"door": {"oom_score_adj": "-500"}, "ide": {"oom_score_adj": "900"}})
    # The pod at 100 (raised: no privilege needed), above the floor this process inherited.
    pod = RunningPod(catalogue, tmp_path / "home", wrapper=[
        "sh", "-c", 'echo 100 > /proc/self/oom_score_adj && exec "$@"', "sh",
        "setpriv", "--inh-caps=-sys_resource", "--bounding-set=-sys_resource", "--"])
    try:
        pod.wait_event("spawned", service="door", count=3, timeout=20)
        [said] = pod.events("oom_score_adj_refused")
        assert score(pod.engine_pid) == 100
        assert (said["service"], said["wanted"], said["got"]) == ("door", -500, 100)
        [ide] = pod.wait_event("spawned", service="ide")
        assert score(ide["pid"]) == 900  # raising needs no privilege
    finally:
        pod.stop()


# -- a real OOM kill ---------------------------------------------------------------------------

LIMIT = 192 << 20
HOG = f"{PYTHON} -c \"import time; x = b'x' * (1 << 30); time.sleep(60)\""


@contextlib.contextmanager
def memory_cgroup(name: str) -> Iterator[Path]:
    """A memory cgroup below ours with LIMIT, or a skip saying why there is none."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    v1 = next((line.split(":", 2)[2] for line in lines
               if "memory" in line.split(":", 2)[1].split(",")), None)
    v2 = next((line.split(":", 2)[2] for line in lines if line.split(":", 2)[1] == ""), None)
    made: Path | None = None
    try:
        if v1 is not None and Path("/sys/fs/cgroup/memory").is_dir():
            made = Path("/sys/fs/cgroup/memory") / v1.lstrip("/") / name
            made.mkdir()
            (made / "memory.limit_in_bytes").write_text(str(LIMIT))
            memsw = made / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # no swapping out of the limit
                memsw.write_text(str(LIMIT))
        elif v2 is not None and (Path("/sys/fs/cgroup") / v2.lstrip("/")).is_dir():
            made = Path("/sys/fs/cgroup") / v2.lstrip("/") / name
            made.mkdir()
            (made / "memory.max").write_text(str(LIMIT))
            (made / "memory.swap.max").write_text("0")
        else:
            pytest.skip("no memory cgroup hierarchy is mounted")
    except OSError as error:
        if made is not None and made.is_dir():
            made.rmdir()
        pytest.skip(f"cannot make a memory cgroup here: {error.strerror}")
    assert made is not None
    try:
        yield made
    finally:
        # Empty once the pod is gone (its children with it); a cgroup is removed with rmdir.
        wait_for(lambda: not (made / "cgroup.procs").read_text().strip(), 10,
                 "the test's memory cgroup to empty")
        made.rmdir()


def status_of(pod: RunningPod, name: str) -> dict[str, Any]:
    services = PodClient(str(pod.run_dir / "podctl.sock"), 10).call("GET", "/v1/status")
    found: dict[str, Any] = next(s for s in services["services"] if s["name"] == name)
    return found


def test_an_oom_kill_is_reported_as_one_and_a_kill_9_is_not(tmp_path: Path) -> None:
    """A hog under the pod's memory limit is killed by the kernel: its last exit says the OOM
    killer (event, status, metrics); a SIGKILL sent by hand afterwards stays a bare SIGKILL."""
    with memory_cgroup(f"coditect-oom-test-{os.getpid()}") as cgroup:
        catalogue = write_catalogue(tmp_path / "cat", {
            "hog": {"command": HOG, "startsecs": "0", "autorestart": "false"},
            "idle": {"command": "sleep 120", "autorestart": "false"}},
            {"hog": {"oom_score_adj": "1000", "critical": "false"},
             "idle": {"critical": "false"}})
        pod = RunningPod(catalogue, tmp_path / "home", wrapper=[
            "sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup)])
        try:
            [exited] = pod.wait_event("exited", service="hog", timeout=30)
            assert exited["status"] == OOM_KILLED, pod.tail()
            [killed] = pod.events("oom_killed")
            assert (killed["service"], killed["oom_score_adj"]) == ("hog", 1000)
            pod.wait_event("health_listening")
            assert status_of(pod, "hog")["last_exit"] == OOM_KILLED
            _, metrics = get(pod.health_port, "/metrics")
            assert 'coditect_pod_service_oom_kills_total{service="hog"} 1.0' in metrics
            assert 'coditect_pod_service_oom_kills_total{service="idle"} 0.0' in metrics

            [idle] = pod.events("spawned", service="idle")
            os.kill(idle["pid"], signal.SIGKILL)
            [exited] = pod.wait_event("exited", service="idle")
            assert exited["status"] == "signal 9 (SIGKILL)"
        finally:
            pod.stop()
        assert pod.process.returncode is not None
