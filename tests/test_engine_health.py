"""Health of the real engine: probes, `after`, liveness restarts and the endpoints through a
pod's life, over real HTTP on loopback and the real control socket."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from healthz.podctl_client import PodClient
from tests.support import RunningPod, free_port, get, pid_alive, wait_for, write_catalogue

HTTP = f"{sys.executable} -m http.server --bind 127.0.0.1"


def delayed_http(port: int, delay: float) -> str:
    return f"sh -c 'sleep {delay}; exec {HTTP} {port}'"


def http_once(port: int, go: Path) -> str:
    """An HTTP server that starts listening only once the test creates `go`."""
    return f"sh -c 'while [ ! -e {go} ]; do sleep 0.05; done; exec {HTTP} {port}'"


def test_endpoints_through_a_pods_life(tmp_path: Path) -> None:
    """Booting: startupz 503; ready: 200; a non-critical down: warn, still ready; a critical
    down: 503; draining: 503 at once."""
    crit, side = free_port(), free_port()
    go = tmp_path / "crit-may-listen"
    slow_stop = "sh -c 'trap \"sleep 1.5; exit 0\" TERM; while :; do sleep 0.1; done'"
    catalogue = write_catalogue(
        tmp_path / "cat",
        {"crit": {"command": http_once(crit, go), "startsecs": "0"},
         "side": {"command": f"{HTTP} {side}", "startsecs": "0"},
         "lingers": {"command": slow_stop, "startsecs": "0", "stopwaitsecs": "5"}},
        health={"crit": {"ready": f"http://127.0.0.1:{crit}/", "interval": "0.3s"},
                "side": {"ready": f"http://127.0.0.1:{side}/", "interval": "0.3s",
                         "critical": "false"},
                "lingers": {"critical": "false"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    port = pod.health_port
    try:
        wait_for(lambda: _answers(port), 10, "the health listener")
        assert get(port, "/startupz")[0] == 503
        assert get(port, "/readyz")[0] == 503
        go.touch()
        wait_for(lambda: get(port, "/readyz")[0] == 200, 15, "ready")
        assert get(port, "/startupz")[0] == 200
        status, body = get(port, "/health")
        assert status == 200 and json.loads(body)["status"] == "pass"

        client = PodClient(str(pod.run_dir / "podctl.sock"), 15)
        client.call("POST", "/v1/services/side/stop")
        status, body = get(port, "/health")
        assert status == 200 and json.loads(body)["status"] == "warn"
        assert get(port, "/readyz")[0] == 200
        verbose = get(port, "/readyz?verbose")[1]
        assert verbose.rstrip().endswith("readyz check passed")  # non-critical: no gate

        client.call("POST", "/v1/services/crit/stop")
        assert get(port, "/readyz")[0] == 503
        status, body = get(port, "/health")
        assert status == 503 and json.loads(body)["status"] == "fail"
        assert "[-]crit failed: reason withheld" in get(port, "/readyz?verbose")[1]
        assert get(port, "/startupz")[0] == 200  # started up once: stays so

        client.call("POST", "/v1/services/crit/start")
        wait_for(lambda: get(port, "/readyz")[0] == 200, 15, "ready again")
        pod.signal(signal.SIGTERM)
        # `lingers` takes 1.5 s to stop; during all of it the pod is not ready.
        assert get(port, "/readyz")[0] == 503
        assert pod.wait() == 0
    finally:
        pod.stop()


def _answers(port: int) -> bool:
    try:
        get(port, "/livez")
        return True
    except OSError:
        return False


def test_sigstopped_child_is_replaced_by_liveness(tmp_path: Path) -> None:
    """A hung (SIGSTOPped) child fails its liveness probe `failures` times and is replaced."""
    port = free_port()
    catalogue = write_catalogue(
        tmp_path / "cat", {"web": {"command": f"{HTTP} {port}", "startsecs": "0"}},
        health={"web": {"ready": f"http://127.0.0.1:{port}/",
                        "live": f"http://127.0.0.1:{port}/",
                        "interval": "0.3s", "timeout": "0.3s", "failures": "2",
                        "start_timeout": "10s"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pid = pod.wait_event("spawned", service="web")[0]["pid"]
        pod.wait_event("ready", service="web")
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        pod.wait_event("liveness_failed", service="web", timeout=10)
        respawn = pod.wait_event("spawned", service="web", count=2, timeout=15)[1]
        assert respawn["pid"] != pid
        wait_for(lambda: not pid_alive(pid), 5, "the hung process gone")
        # failures x interval (+ probe timeouts and scheduling): well under the bound.
        assert time.monotonic() - stopped < 8
        pod.wait_event("ready", service="web", count=2, timeout=10)
        metrics = get(pod.health_port, "/metrics")[1]
        assert 'coditect_pod_service_restarts_total{reason="liveness",service="web"} 1.0' \
            in metrics
    finally:
        pod.stop()


def test_after_waits_for_a_slow_dependency(tmp_path: Path) -> None:
    """`front` (after `back`) is spawned only once `back` is ready, 1 s after its spawn."""
    port = free_port()
    catalogue = write_catalogue(
        tmp_path / "cat",
        {"back": {"command": delayed_http(port, 1.0), "startsecs": "0"},
         "front": {"command": "sleep 1000", "startsecs": "0", "priority": "1"}},
        health={"back": {"ready": f"http://127.0.0.1:{port}/", "interval": "0.2s"},
                "front": {"after": "back"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("spawned", service="front", timeout=15)
        order = [(e["event"], e.get("service")) for e in pod.events()
                 if e.get("event") in ("spawned", "ready")]
        assert order.index(("ready", "back")) < order.index(("spawned", "front"))
    finally:
        pod.stop()


def test_after_gives_up_on_a_dependency_that_never_gets_ready(tmp_path: Path) -> None:
    """A dependency never ready: after its start_timeout the dependent starts anyway, says so,
    and the broken one is restarted as a failed start."""
    port = free_port()
    catalogue = write_catalogue(
        tmp_path / "cat",
        {"broken": {"command": "sleep 1000", "startsecs": "0"},
         "front": {"command": "sleep 1000", "startsecs": "0"}},
        health={"broken": {"ready": f"tcp://127.0.0.1:{port}", "interval": "0.2s",
                           "start_timeout": "1s"},
                "front": {"after": "broken"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("starting_anyway", service="front", timeout=10)
        pod.wait_event("spawned", service="front")
        pod.wait_event("spawned", service="broken", count=2, timeout=10)
    finally:
        pod.stop()


def test_hanging_probe_never_delays_an_endpoint(tmp_path: Path) -> None:
    """An exec probe that hangs for 10 s: /readyz and /livez still answer at once."""
    catalogue = write_catalogue(
        tmp_path / "cat", {"svc": {"command": "sleep 1000", "startsecs": "0"}},
        health={"svc": {"ready": "exec:sleep 10", "timeout": "10s", "interval": "11s"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        wait_for(lambda: _answers(pod.health_port), 10, "the health listener")
        for path in ("/readyz", "/livez", "/health", "/metrics", "/readyz?verbose"):
            began = time.monotonic()
            get(pod.health_port, path)
            assert time.monotonic() - began < 5.0, path  # the probe hangs for 10 s
        assert get(pod.health_port, "/readyz")[0] == 503
    finally:
        pod.stop()
