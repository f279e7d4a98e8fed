"""Probes through the real engine (`coditect-start` as a process, real children, real HTTP on
loopback): restart budgets and /livez, exec probes run through our reaper, a WebSocket probe
against the codi2 stand-in, requires_env, and a probe that starts hanging."""

from __future__ import annotations

import signal
import sys
import time
from functools import partial
from pathlib import Path

from tests.support import (
    ROOT,
    RunningPod,
    free_port,
    get,
    pid_alive,
    wait_for,
    write_catalogue,
    zombies_of,
)


def answers(port: int, path: str, status: int) -> bool:
    try:
        return get(port, path)[0] == status
    except OSError:  # the listener is not up yet
        return False


def gone(pid: int) -> bool:
    """Neither running nor a zombie: reaped (or never ours)."""
    return not Path(f"/proc/{pid}").exists()


def test_restart_budget_fails_livez_only_for_a_critical_service(tmp_path: Path) -> None:
    """A critical service crash-looping past 2/1m makes /livez 503 while the engine keeps
    restarting it; the same loop in a non-critical service leaves /livez at 200."""
    crasher = "sh -c 'sleep 0.1; exit 1'"
    pods = {}
    for critical in ("true", "false"):
        catalogue = write_catalogue(
            tmp_path / f"cat-{critical}", {"crasher": {"command": crasher, "startsecs": "0"}},
            health={"crasher": {"restart_budget": "2/1m", "critical": critical}})
        pods[critical] = RunningPod(catalogue, tmp_path / f"home-{critical}")
    try:
        critical_pod, side_pod = pods["true"], pods["false"]
        wait_for(lambda: answers(critical_pod.health_port, "/livez", 200), 10, "/livez up")
        # Restarts at 0, 0.5 and 1 s backoff: the third one is over the budget.
        wait_for(lambda: answers(critical_pod.health_port, "/livez", 503), 10,
                 lambda: f"/livez 503\n{critical_pod.tail()}")
        assert len(critical_pod.events("backoff", service="crasher")) >= 3
        verbose = get(critical_pod.health_port, "/livez?verbose")[1]
        assert "[-]crasher failed: reason withheld" in verbose
        assert "[+]loop ok" in verbose
        # The engine keeps retrying meanwhile, and /livez stays failed.
        spawned = len(critical_pod.events("spawned", service="crasher"))
        critical_pod.wait_event("spawned", service="crasher", count=spawned + 1, timeout=10)
        assert get(critical_pod.health_port, "/livez")[0] == 503

        side_pod.wait_event("backoff", service="crasher", count=4, timeout=15)
        assert get(side_pod.health_port, "/livez")[0] == 200
        assert "crasher" not in get(side_pod.health_port, "/livez?verbose")[1]
    finally:
        for pod in pods.values():
            pod.stop()


def test_exec_readiness_probe_through_the_engine(tmp_path: Path) -> None:
    """An exec: readiness probe passes and fails with its command; each run's process and the
    child it leaves in the background are killed and reaped (no zombie, no orphan)."""
    flag, pids = tmp_path / "ok", tmp_path / "probe-pids"
    probe = f"exec:sh -c 'sleep 30 & echo $$ $! >> {pids} && test -e {flag}'"
    catalogue = write_catalogue(
        tmp_path / "cat", {"svc": {"command": "sleep 1000", "startsecs": "0"}},
        health={"svc": {"ready": probe, "interval": "0.2s", "failures": "1"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    port = pod.health_port
    try:
        wait_for(lambda: answers(port, "/readyz/svc", 503), 10, "/readyz/svc 503 (failing)")
        flag.touch()
        wait_for(lambda: answers(port, "/readyz/svc", 200), 5, "/readyz/svc 200 (passing)")
        assert get(port, "/readyz")[0] == 200
        flag.unlink()
        wait_for(lambda: answers(port, "/readyz/svc", 503), 5, "/readyz/svc 503 again")

        wait_for(lambda: len(pids.read_text().splitlines()) >= 6, 5, "six probe runs")
        runs = [line.split() for line in pids.read_text().splitlines()]
        for shell, background in runs[:-1]:  # the last one may still be running
            for pid in (int(shell), int(background)):
                wait_for(partial(gone, pid), 2, f"probe process {pid} reaped")
        assert zombies_of(pod.engine_pid) == []

        pod.signal(signal.SIGTERM)
        assert pod.wait() == 0
        for line in pids.read_text().splitlines():
            for pid in map(int, line.split()):
                assert not pid_alive(pid), f"probe process {pid} outlived the pod"
    finally:
        pod.stop()


def test_ws_readiness_probe_against_the_codi2_standin(tmp_path: Path) -> None:
    """ws:// upgrades and pings the codi2 stand-in: 503 while it is not listening yet, 200
    once it answers the ping with a pong."""
    port = free_port()
    standin = ROOT / "demo" / "standins" / "codi2-standin"
    catalogue = write_catalogue(
        tmp_path / "cat",
        {"codi2": {"command": f"{sys.executable} {standin} --port {port} --start-delay 1",
                   "startsecs": "0"}},
        health={"codi2": {"ready": f"ws://127.0.0.1:{port}/", "interval": "0.3s"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        wait_for(lambda: answers(pod.health_port, "/livez", 200), 10, "the health listener")
        assert get(pod.health_port, "/readyz/codi2")[0] == 503
        wait_for(lambda: answers(pod.health_port, "/readyz/codi2", 200), 10,
                 lambda: f"codi2 ready\n{pod.tail()}")
        pod.wait_event("ready", service="codi2")
        assert get(pod.health_port, "/readyz")[0] == 200
        pod.signal(signal.SIGTERM)
        assert pod.wait() == 0
    finally:
        pod.stop()


def test_missing_required_env_is_exit_78_naming_it(tmp_path: Path) -> None:
    """requires_env names a variable that is not set: exit 78, the message names the variable,
    the file and the section, and nothing is started. Set, the same catalogue runs."""
    marker = tmp_path / "started"
    variable = "CODITECT_TEST_SECRET_Q9"
    catalogue = write_catalogue(
        tmp_path / "cat", {"api": {"command": f"sh -c 'touch {marker} && exec sleep 1000'",
                                   "startsecs": "0"}},
        health={"api": {"requires_env": f"{variable}, HOME"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        assert pod.wait() == 78
        lines = [line for line in pod.stderr if variable in line]
        assert len(lines) == 1, pod.stderr
        assert "conf.d/api.conf" in lines[0] and "[health:api]" in lines[0]
        assert "requires_env" in lines[0]
        assert "Traceback" not in "".join(pod.stderr)
        assert not marker.exists()
    finally:
        pod.stop()

    pod = RunningPod(catalogue, tmp_path / "home2", env={variable: "s3cret"})
    try:
        pod.wait_event("spawned", service="api")
        wait_for(marker.exists, 5, "api started")
        assert not any("s3cret" in line for line in pod.raw + pod.stderr)
    finally:
        pod.stop()


def test_a_readiness_probe_that_starts_hanging_goes_stale(tmp_path: Path) -> None:
    """A probe that hangs returns nothing for its whole timeout; its last pass goes stale after
    three intervals and /readyz/NAME turns 503 then, long before the timeout ends it."""
    hang = tmp_path / "hang"
    interval, timeout = 0.3, 12.0
    catalogue = write_catalogue(
        tmp_path / "cat", {"svc": {"command": "sleep 1000", "startsecs": "0"}},
        health={"svc": {"ready": f"exec:sh -c 'test ! -e {hang} || exec sleep 30'",
                        "interval": f"{interval}s", "timeout": f"{timeout:g}s"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    port = pod.health_port
    try:
        wait_for(lambda: answers(port, "/readyz/svc", 200), 10, "ready")
        hang.touch()
        began = time.monotonic()
        wait_for(lambda: answers(port, "/readyz/svc", 503), 3 * interval + timeout,
                 "/readyz/svc 503 once the last pass is stale")
        took = time.monotonic() - began
        assert took < timeout / 2, f"{took:.2f}s: not staleness but the timeout"
        assert get(port, "/readyz")[0] == 503
        # The hung probe times out, the next ones pass: ready again.
        hang.unlink()
        wait_for(lambda: answers(port, "/readyz/svc", 200), timeout + 5, "ready again")
    finally:
        pod.stop()
