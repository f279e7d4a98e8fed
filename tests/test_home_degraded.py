"""A full or read-only home volume degrades the pod, never stops it: the services start, their
logs reach stdout, /health warns, /metrics and `podctl status` say so, and the next boot with
room completes the seeding."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import PYTHON, ROOT, RunningPod, get, wait_for, write_catalogue

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="a private mount namespace needs root and unshare")

TEMPLATE = ROOT / "demo" / "template"
TALKER = {"command": "sh -c 'echo hello; exec sleep 100'", "startsecs": "0"}


def _in_mount_namespace(script: str, home: Path) -> list[str]:
    """A command line that runs `script` (with $0 the home) in a private mount namespace,
    then the engine's command line in its place."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'{script} && exec "$@"', str(home)]


def _boot_degraded(pod: RunningPod) -> None:
    """The service runs and its line reaches stdout; the home's problem is a warning."""
    wait_for(lambda: pod.events(None, service="talker", stream="stdout"), 15, "talker's line")
    assert pod.events(None, service="talker", stream="stdout")[0]["message"] == "hello"
    status, body = wait_for(lambda: _health(pod), 15, "/health")
    assert status == 200 and body["status"] == "warn", body
    assert body["checks"]["pod:home"][0]["status"] == "warn"
    metrics = get(pod.health_port, "/metrics")[1]
    assert "coditect_pod_home_degraded 1.0" in metrics
    assert "Traceback" not in "".join(pod.stderr)
    assert any("warning:" in line and "stdout only" in line for line in pod.stderr)


def _health(pod: RunningPod) -> tuple[int, dict[str, object]] | None:
    try:
        status, text = get(pod.health_port, "/health")
    except OSError:
        return None
    return status, json.loads(text)


def test_a_full_home_volume_degrades_and_the_services_run(tmp_path: Path) -> None:
    """A 64 KiB tmpfs filled to the last block: coditect_init cannot seed (no space), the pod
    still boots, runs its service and says what is wrong; SIGTERM drains with exit 0."""
    catalogue = write_catalogue(tmp_path / "cat", {"talker": TALKER})
    home = tmp_path / "home"
    home.mkdir()
    fill = 'mount -t tmpfs -o size=64k tmpfs "$0" && { head -c 1m /dev/zero > "$0/fill"; true; }'
    pod = RunningPod(catalogue, home, wrapper=_in_mount_namespace(fill, home),
                     env={"CODITECT_TEMPLATE": str(TEMPLATE)})
    try:
        _boot_degraded(pod)
        assert any("space" in line for line in pod.stderr), pod.stderr
        pod.signal(signal.SIGTERM)
        assert pod.wait(30) == 0
    finally:
        pod.stop()


def test_a_read_only_home_degrades_and_the_next_boot_completes_it(tmp_path: Path) -> None:
    """A read-only bind mount of an empty home: the pod boots degraded; the next boot, on the
    same directory writable again, seeds the template and has nothing to warn about."""
    catalogue = write_catalogue(tmp_path / "cat", {"talker": TALKER})
    home = tmp_path / "home"
    home.mkdir()
    read_only = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"'
    pod = RunningPod(catalogue, home, wrapper=_in_mount_namespace(read_only, home),
                     env={"CODITECT_TEMPLATE": str(TEMPLATE)})
    try:
        _boot_degraded(pod)
        assert any("read-only" in line for line in pod.stderr), pod.stderr
        podctl = [PYTHON, "-m", "healthz.podctl", "--socket", str(pod.run_dir / "podctl.sock"),
                  "status"]
        done = subprocess.run(podctl, capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert "read-only" in done.stderr, done.stderr
        pod.signal(signal.SIGTERM)
        assert pod.wait(30) == 0
    finally:
        pod.stop()
    assert list(home.iterdir()) == []

    again = RunningPod(catalogue, home, env={"CODITECT_TEMPLATE": str(TEMPLATE)})
    try:
        wait_for(lambda: (home / "logs" / "talker.log").exists(), 15, "talker's log file")
        _status, body = wait_for(lambda: _health(again), 15, "/health")
        assert "pod:home" not in body["checks"]
        assert (home / "settings.json").is_file() and (home / "agents").is_dir()
        again.signal(signal.SIGTERM)
        assert again.wait(30) == 0
    finally:
        again.stop()
