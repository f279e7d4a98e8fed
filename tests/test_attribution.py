"""What the run mark attributes: a service's memory counts its descendants wherever they went
(a `setsid` child reparented to the engine), and what no service accounts for (`env -i`
cleared the mark) is counted on /metrics and still reaped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from healthz.census import Census, Scanner
from healthz.marks import HELPER_MARK, RUN_MARK
from healthz.podctl_client import PodClient
from tests.support import PYTHON, RunningPod, get, pid_alive, unmeasured, wait_for, write_catalogue

BIG = 64 << 20  # bytes the escaped child holds resident: far above a shell and a sleep


def metric(pod: RunningPod, name: str, **labels: str) -> float | None:
    try:
        text = get(pod.health_port, "/metrics")[1]
    except OSError:
        return None  # the health port opens a moment after the spawns
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def status_rss(pod: RunningPod, service: str) -> int:
    client = PodClient(str(pod.run_dir / "podctl.sock"), 10)
    for entry in client.call("GET", "/v1/status")["services"]:
        if entry["name"] == service:
            return int(entry["rss_bytes"] or 0)
    raise AssertionError(f"{service} not in the status")


def recorded_pid(path: Path) -> int | None:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text else None


def end(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_setsid_child_counts_towards_its_service(tmp_path: Path) -> None:
    """A service double-forks a `setsid` Python holding 64 MiB: it is the engine's child in a
    session of its own, and both `podctl status` and /metrics count its memory as the
    service's; a neighbour's figure does not."""
    pidfile = tmp_path / "escaped.pid"
    holder = tmp_path / "holder.py"
    holder.write_text(f"import time\nheld = b'x' * {BIG}\ntime.sleep(1000)\n")
    script = tmp_path / "dev.sh"
    # The subshell exits at once, so the Python is reparented to the engine (its subreaper).
    script.write_text(f"(setsid {PYTHON} {holder} & echo $! > {pidfile})\nexec sleep 1000\n")
    catalogue = write_catalogue(tmp_path / "cat", {
        "dev": {"command": f"sh {script}", "startsecs": "0"},
        "neighbour": {"command": "sleep 1000", "startsecs": "0"},
    })
    pod = RunningPod(catalogue, tmp_path / "home", env=unmeasured())
    escaped = None
    try:
        spawned = {e["service"]: e["pid"] for e in pod.wait_event("spawned", count=2)}
        escaped = wait_for(lambda: recorded_pid(pidfile), 10, "the escaped child's pid")
        held = psutil.Process(escaped)
        wait_for(lambda: held.memory_info().rss > BIG, 20, "the escaped child's memory")
        assert held.ppid() == pod.engine_pid
        assert os.getsid(escaped) != spawned["dev"]
        rss = wait_for(lambda: (metric(pod, "coditect_pod_service_rss_bytes", service="dev")
                                or 0) > BIG, 10, "the service's tree figure on /metrics")
        assert rss
        assert status_rss(pod, "dev") > BIG
        neighbour = metric(pod, "coditect_pod_service_rss_bytes", service="neighbour")
        assert neighbour is not None and neighbour < BIG
    finally:
        pod.stop()
        end(escaped)


def test_a_process_that_cleared_the_mark_is_counted_and_still_reaped(tmp_path: Path) -> None:
    """`env -i setsid sleep`, double-forked by a service, carries no mark and is the engine's
    child: /metrics counts it as unattributed (the engine's exec probes, running meanwhile,
    are not counted), and when it exits the engine reaps it and the count is 0 again."""
    pidfile = tmp_path / "cleared.pid"
    env, setsid, sleep = (shutil.which(name) for name in ("env", "setsid", "sleep"))
    script = tmp_path / "dev.sh"
    script.write_text(f"({env} -i {setsid} {sleep} 1000 & echo $! > {pidfile})\n"
                      "exec sleep 1000\n")
    catalogue = write_catalogue(
        tmp_path / "cat", {"dev": {"command": f"sh {script}", "startsecs": "0"}},
        # A probe whose command lives most of the time: the engine's helper, never counted.
        health={"dev": {"live": "exec:sleep 0.8", "interval": "1s", "timeout": "2s"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    cleared = None
    try:
        pod.wait_event("spawned")
        cleared = wait_for(lambda: recorded_pid(pidfile), 10, "the cleared child's pid")
        wait_for(lambda: psutil.Process(cleared).name() == "sleep", 10, "the cleared sleep")
        assert psutil.Process(cleared).ppid() == pod.engine_pid
        assert b"CODITECT_SERVICE_RUN" not in Path(f"/proc/{cleared}/environ").read_bytes()
        wait_for(lambda: metric(pod, "coditect_pod_unattributed_processes") == 1, 10,
                 lambda: "one unattributed process: "
                 f"{metric(pod, 'coditect_pod_unattributed_processes')}")
        os.kill(cleared, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{cleared}").exists(), 10,
                 "the cleared sleep reaped (not even a zombie left)")
        wait_for(lambda: metric(pod, "coditect_pod_unattributed_processes") == 0, 10,
                 "no unattributed process left")
        assert pid_alive(pod.engine_pid)
    finally:
        pod.stop()
        end(cleared)


def test_the_census_tells_helpers_services_and_the_unattributed_apart() -> None:
    """Three children of this process (the census's root): one with a run mark, one with the
    helper mark, one with neither. Only the last is unattributed; the marked one is its
    service's whatever its parent; the census's figures are the kernel's."""
    env = unmeasured()
    marked = subprocess.Popen(["sleep", "100"], env={**env, RUN_MARK: "dev/1.1"})
    helper = subprocess.Popen(["sleep", "100"], env={**env, HELPER_MARK: "exec-probe"})
    bare = subprocess.Popen(["sleep", "100"], env={})
    children = (marked, helper, bare)
    try:
        def exec_done() -> Census | None:
            census = Scanner().scan()  # a fresh scanner: no origin read before the exec
            names = {p.pid: Path(f"/proc/{p.pid}/comm").read_text().strip() for p in children}
            return census if set(names.values()) == {"sleep"} else None

        census = wait_for(exec_done, 10, "the three sleeps exec'd")
        assert census.unattributed({"dev": []}) == {bare.pid}
        assert census.tree("dev", []) == {marked.pid}
        assert census.unattributed({}) == {marked.pid, bare.pid}  # a service no longer known
        rss = psutil.Process(bare.pid).memory_info().rss
        # A just-exec'd sleep still maps pages in: the same order, not the same byte.
        assert census.procs[bare.pid].rss_bytes == pytest.approx(rss, rel=0.5)
    finally:
        for child in children:
            child.kill()
            child.wait(10)


class _CostlyScanner(Scanner):
    """A real scan that also burns `cost` seconds of this thread's CPU, as a pod of thousands
    of processes makes a pass cost."""

    def __init__(self, cost: float) -> None:
        super().__init__()
        self.cost = cost
        self.scans = 0

    def scan(self) -> Census:
        self.scans += 1
        until = time.thread_time() + self.cost
        while time.thread_time() < until:
            pass
        return super().scan()


def test_a_costly_census_is_reused_long_enough_to_stay_within_its_share() -> None:
    """A pass costing 30 ms of CPU serves 3 s (1 % of a core), not MAP_TTL: scrapes every
    0.5 s cause one pass in 3 s; a cheap pass is reused for MAP_TTL only."""
    from healthz.proctree import CENSUS_CPU_SHARE, MAP_TTL, ProcessTree

    now = [0.0]
    costly = _CostlyScanner(0.03)
    tree = ProcessTree(clock=lambda: now[0], scanner=costly)
    for _ in range(6):  # 0.0 … 2.5 s
        tree.census()
        now[0] += 0.5
    assert costly.scans == 1
    now[0] = 0.03 / CENSUS_CPU_SHARE + 0.5
    tree.census()
    assert costly.scans == 2
    cheap = _CostlyScanner(0.0)
    now[0] = 0.0
    tree = ProcessTree(clock=lambda: now[0], scanner=cheap)
    tree.census()
    now[0] = MAP_TTL
    tree.census()
    assert cheap.scans == 2
