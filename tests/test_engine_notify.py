"""Readiness told by the service itself, with the real engine and real children: systemd's
sd_notify protocol (`ready=notify`, `watchdog=`) from a Python child that speaks it with a bare
`sendto` and from a shell using Debian's `systemd-notify`, and s6's notification fd
(`ready=fd:N`) from a shell writing a newline to it."""

from __future__ import annotations

import functools
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from healthz.podctl import main as podctl
from healthz.podctl_client import PodClient
from tests.support import PYTHON, RunningPod, get, wait_for, write_catalogue

# A child speaking sd_notify as a C daemon does, without a library: one datagram per message.
# It says what SAY holds, one message per `|` (`;` between its lines); `sleep:S` pauses S
# seconds instead, and `wait:PATH` waits for the test to create PATH (so a test sees it
# before a message first).
NOTIFIER = """\
import os, socket, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
address = os.environ["NOTIFY_SOCKET"]
for message in os.environ["SAY"].split("|"):
    if message.startswith("sleep:"):
        time.sleep(float(message[6:]))
    elif message.startswith("wait:"):
        while not os.path.exists(message[5:]):
            time.sleep(0.02)
    else:
        sock.sendto(message.replace(";", "\\n").encode(), address)
time.sleep(120)
"""


def notifier(tmp_path: Path, say: str) -> dict[str, str]:
    script = tmp_path / "notifier.py"
    script.write_text(NOTIFIER)
    return {"command": f"{PYTHON} {script}", "environment": f'SAY="{say}"'}


def status(pod: RunningPod) -> Any:
    pod.wait_event("health_listening")  # the control socket is up
    return PodClient(str(pod.run_dir / "podctl.sock"), 10).call("GET", "/v1/status")


def service(pod: RunningPod, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in status(pod)["services"] if s["name"] == name)
    return found


def has_reason(pod: RunningPod, name: str, reason: str) -> bool:
    return bool(service(pod, name)["reason"] == reason)


def test_ready_when_the_service_says_ready_1_and_its_status_is_shown(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Starting until READY=1, however long the process has been up; then ready, with its
    STATUS= in /v1/status and `podctl status`."""
    go = tmp_path / "go"
    catalogue = write_catalogue(tmp_path / "cat", {
        "api": {**notifier(tmp_path, f"STATUS=warming up|wait:{go}|READY=1;STATUS=serving"),
                "startsecs": "0"}}, {"api": {"ready": "notify", "start_timeout": "60s"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("spawned", service="api")
        wait_for(lambda: service(pod, "api")["status"] == "warming up", 10, "STATUS=")
        api = service(pod, "api")
        assert (api["state"], api["ready"]) == ("starting", False)
        go.touch()
        pod.wait_event("ready", service="api")
        api = service(pod, "api")
        assert (api["state"], api["ready"], api["status"]) == ("running", True, "serving")
        capsys.readouterr()
        assert podctl(["status"], env={"CODITECT_RUN": str(pod.run_dir)}) == 0
        assert "api: serving\n" in capsys.readouterr().out
    finally:
        pod.stop()


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="no systemd-notify here")
def test_systemd_notify_from_a_shell_makes_it_ready(tmp_path: Path) -> None:
    """Debian's systemd-notify, run by the service's shell (a child of the run, not its
    process): accepted, as it carries the run's mark."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "web": {"command": "sh -c 'systemd-notify --ready --status=listening; exec sleep 120'"}},
        {"web": {"ready": "notify"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("ready", service="web")
        assert service(pod, "web")["status"] == "listening"
        assert status(pod)["notify_ignored"] == 0
    finally:
        pod.stop()


def test_a_newline_on_the_notification_fd_makes_it_ready(tmp_path: Path) -> None:
    """s6's protocol: fd 5 is the write end of a pipe; the newline makes it ready."""
    go = tmp_path / "go"
    command = (f"sh -c 'while [ ! -e {go} ]; do sleep 0.02; done; echo >&5; exec sleep 120'")
    catalogue = write_catalogue(tmp_path / "cat", {"db": {"command": command}},
                                {"db": {"ready": "fd:5"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("spawned", service="db")
        assert service(pod, "db")["state"] == "starting"
        go.touch()
        pod.wait_event("ready", service="db")
        assert service(pod, "db")["ready"]
    finally:
        pod.stop()


def test_a_process_outside_the_run_is_ignored_and_counted(tmp_path: Path) -> None:
    """READY=1 from this test (no service's process) changes nothing; it is counted."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "api": notifier(tmp_path, f"STATUS=not yet|wait:{tmp_path / 'never'}")},
        {"api": {"ready": "notify"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        wait_for(lambda: service(pod, "api")["status"] == "not yet", 10, "its own STATUS=")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"READY=1\nSTATUS=forged", str(pod.run_dir / "notify.sock"))
        wait_for(lambda: status(pod)["notify_ignored"] == 1, 10, "the foreign datagram counted")
        api = service(pod, "api")
        assert (api["state"], api["ready"], api["status"]) == ("starting", False, "not yet")
    finally:
        pod.stop()


def test_a_missed_watchdog_restarts_the_service(tmp_path: Path) -> None:
    """watchdog=1s: WATCHDOG_USEC is given; pings keep it; silence restarts it (liveness)."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "worker": notifier(tmp_path, "READY=1|WATCHDOG=1|sleep:0.3|WATCHDOG=1")},
        {"worker": {"ready": "notify", "watchdog": "1s"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        first = pod.wait_event("spawned", service="worker")[0]["pid"]
        environ = Path(f"/proc/{first}/environ").read_bytes().split(b"\0")
        assert b"WATCHDOG_USEC=1000000" in environ
        missed = pod.wait_event("watchdog_missed", timeout=15, service="worker")[0]
        assert missed["seconds"] == 1.0
        pod.wait_event("spawned", timeout=15, count=2, service="worker")
        assert service(pod, "worker")["restarts_by_reason"].get("liveness", 0) >= 1
    finally:
        pod.stop()


def test_extend_timeout_usec_extends_the_start_timeout(tmp_path: Path) -> None:
    """start_timeout=2s, but the service asks for 30 s more at once and is ready after 3 s:
    never timed out, never restarted."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "slow": notifier(tmp_path, "EXTEND_TIMEOUT_USEC=30000000|sleep:3|READY=1")},
        {"slow": {"ready": "notify", "start_timeout": "2s"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        assert pod.wait_event("start_extended", service="slow")[0]["seconds"] == 30.0
        pod.wait_event("ready", timeout=20, service="slow")
        assert not pod.events("start_timeout")
        assert len(pod.events("spawned", service="slow")) == 1
    finally:
        pod.stop()


def test_reloading_and_stopping_make_it_unready_until_ready_again(tmp_path: Path) -> None:
    """RELOADING=1 and STOPPING=1: not ready (with the reason) until the next READY=1."""
    steps = [tmp_path / f"step{n}" for n in range(3)]
    catalogue = write_catalogue(tmp_path / "cat", {
        "api": notifier(tmp_path, f"READY=1|wait:{steps[0]}|RELOADING=1|wait:{steps[1]}|"
                        f"READY=1|wait:{steps[2]}|STOPPING=1")}, {"api": {"ready": "notify"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("ready", service="api")
        for step, said in zip(steps, ("RELOADING=1", "", "STOPPING=1"), strict=True):
            step.touch()
            reason = f"the service said {said}" if said else ""
            wait_for(functools.partial(has_reason, pod, "api", reason), 10,
                     f"the reason after {step}")
            api = service(pod, "api")
            assert api["ready"] == (not said)
            assert api["state"] == "running"
    finally:
        pod.stop()


FLOOD = """\
import os, socket
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect(os.environ["NOTIFY_SOCKET"])
sock.send(b"READY=1")
big = b"STATUS=" + b"x" * 8000
while True:
    for payload in (b"STATUS=flood", big):
        try:
            sock.send(payload)
        except BlockingIOError:
            pass
"""


def test_a_flooding_child_does_not_starve_pid_1(tmp_path: Path) -> None:
    """A child sending datagrams as fast as it can: /livez keeps answering promptly and
    another service still gets ready by READY=1."""
    script = tmp_path / "flood.py"
    script.write_text(FLOOD)
    go = tmp_path / "go"
    catalogue = write_catalogue(tmp_path / "cat", {
        "flood": {"command": f"{PYTHON} {script}"},
        "api": notifier(tmp_path, f"wait:{go}|READY=1")},
        {"flood": {"ready": "notify"}, "api": {"ready": "notify"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("ready", service="flood")
        pod.wait_event("health_listening")
        worst = 0.0
        for _ in range(20):
            began = time.monotonic()
            assert get(pod.health_port, "/livez")[0] == 200
            worst = max(worst, time.monotonic() - began)
        assert worst < 1.0, f"/livez took {worst:.3f}s under the flood"
        go.touch()
        pod.wait_event("ready", timeout=15, service="api")
        assert service(pod, "flood")["status"] == "flood"
    finally:
        pod.stop()


def test_children_without_notify_get_no_notify_socket(tmp_path: Path) -> None:
    """NOTIFY_SOCKET only where the service speaks sd_notify (a library that finds it set
    would otherwise talk to a supervisor that does not listen for it)."""
    catalogue = write_catalogue(tmp_path / "cat", {"plain": {"command": "sleep 120"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pid = pod.wait_event("spawned", service="plain")[0]["pid"]
        assert b"NOTIFY_SOCKET" not in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        pod.stop()
