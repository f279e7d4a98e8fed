"""`podctl validate`, `doctor` and `logs` ask the running pod over its control socket: the
catalogue is checked as the pod reads it (its overlay, its environment), and logs are read by
the pod, so the socket is all a user needs. Real pods, real sockets, a real second user."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.demo_support import podctl_command, run_podctl, running_demo, world_traversable_tmp
from tests.support import ROOT, RunningPod, wait_for, write_catalogue

POD_ONLY = "PODCTL_TEST_POD_ONLY_VARIABLE"


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory another user can enter; what is inside keeps its own modes."""
    path = world_traversable_tmp("podctl-asks-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def started(pod: RunningPod) -> RunningPod:
    pod.wait_event("health_listening", timeout=20)
    return pod


def test_validate_and_doctor_ask_the_pod_with_its_environment(base: Path) -> None:
    """A variable only the pod has: asked, the pod says valid; the same catalogue checked here,
    without it, is invalid; with no pod, the check is made here and says so."""
    catalogue = write_catalogue(base / "catalogue", {
        "svc": {"command": "/bin/sleep 120", "startsecs": "0"}},
        health={"svc": {"requires_env": POD_ONLY}})
    pod = started(RunningPod(catalogue, base / "home", env={POD_ONLY: "only-the-pod-has-it"}))
    socket = str(pod.run_dir / "podctl.sock")
    mine = {k: v for k, v in os.environ.items() if k != POD_ONLY}
    try:
        asked = run_podctl("validate", "--socket", socket, env=mine)
        assert asked.returncode == 0, asked.stderr
        assert "catalogue valid: 1 services (svc)" in asked.stdout
        assert f"the running pod's catalogue {catalogue}" in asked.stdout
        assert "only-the-pod-has-it" not in asked.stdout + asked.stderr  # findings, no values

        here = run_podctl("validate", str(catalogue), "--socket", socket, env=mine)
        assert here.returncode == 78
        assert f"{POD_ONLY} is not set" in here.stderr

        doctor = run_podctl("doctor", "--socket", socket, env=mine)
        assert "[ok]" in doctor.stdout and "valid, as the pod reads it" in doctor.stdout
    finally:
        pod.stop()
    alone = run_podctl("validate", "--socket", socket,
                       env={**mine, "CODITECT_CATALOGUE": str(catalogue)})
    assert alone.returncode == 78
    assert alone.stderr.startswith("podctl: no pod to ask (pod unreachable: no socket at")
    assert f"{POD_ONLY} is not set" in alone.stderr


def test_the_pod_reports_what_its_catalogue_now_says(base: Path) -> None:
    """An edit that breaks the catalogue: the pod's check names the problem (the pod keeps
    running what it runs), exit 78."""
    catalogue = write_catalogue(base / "catalogue", {
        "svc": {"command": "/bin/sleep 120", "startsecs": "0"}})
    pod = started(RunningPod(catalogue, base / "home"))
    try:
        (catalogue / "conf.d" / "svc.conf").write_text(
            "[program:svc]\ncommand=/bin/sleep 120\nstartsecs=two\n")
        done = run_podctl("validate", "--socket", str(pod.run_dir / "podctl.sock"))
        assert done.returncode == 78, done.stdout + done.stderr
        assert "startsecs: expected a whole number of seconds, got 'two'" in done.stderr
        assert "catalogue invalid (1 problem)" in done.stderr
        assert "Traceback" not in done.stderr
        assert pod.process.poll() is None
    finally:
        pod.stop()


def test_validate_asks_the_running_demo_pod() -> None:
    """The demo pod is valid as it runs (its overlay, its environment), asked from a shell
    that has neither; `validate DIR` still checks the production catalogue here."""
    with running_demo("podctl-validate-") as demo:
        bare = {k: v for k, v in os.environ.items()
                if k not in ("JWT_SECRET", "FDB_CLUSTER_FILE")
                and not k.startswith("CODITECT_")}
        done = run_podctl("validate", "--socket", str(demo.socket), env=bare)
        assert done.returncode == 0, done.stderr
        assert "catalogue valid: 5 services" in done.stdout
        assert "with its overlay" in done.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")
def test_another_user_reads_logs_through_the_socket_only(base: Path) -> None:
    """User nobody, given the socket and nothing else: the log file is unreadable to it, and
    `podctl logs` (and -f) reads it through the pod, with no CODITECT_HOME."""
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                   if os.access(p, os.X_OK)), None)
    if shutil.which("setpriv") is None or python is None:
        pytest.skip("needs setpriv and a system python3")
    catalogue = write_catalogue(base / "catalogue", {"talker": {
        "command": "/bin/sh -c 'echo hello from talker; echo second line; exec sleep 120'",
        "startsecs": "0"}})
    (base / "home-run").mkdir(mode=0o711)  # enterable, not listable
    pod = started(RunningPod(catalogue, base / "home"))
    log = base / "home" / "logs" / "talker.log"
    try:
        wait_for(lambda: log.exists() and b"second line" in log.read_bytes(), 10,
                 "the talker's log")
        socket = pod.run_dir / "podctl.sock"
        os.chown(socket, 65534, -1)  # the socket, and only the socket, is nobody's
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
        denied = subprocess.run([*as_nobody, "cat", str(log)], capture_output=True,
                                timeout=20, check=False)
        assert denied.returncode != 0  # the file itself is out of its reach
        done = subprocess.run(
            [*as_nobody, python, "-P", "-m", "healthz.podctl", "--socket", str(socket),
             "logs", "talker", "-n", "2"],
            capture_output=True, text=True, env=env, cwd="/", timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "hello from talker\nsecond line\n"
        assert done.stderr == ""
        follow = subprocess.Popen(
            [*as_nobody, python, "-P", "-m", "healthz.podctl", "--socket", str(socket),
             "logs", "talker", "-n", "1", "-f"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd="/")
        try:
            seen: list[bytes] = []
            assert follow.stdout is not None
            threading.Thread(target=_collect, args=(follow.stdout, seen), daemon=True).start()
            wait_for(lambda: seen == [b"second line\n"], 15, lambda: f"one line: {seen}")
            os.kill(follow.pid, signal.SIGTERM)
            assert follow.wait(20) == 0
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait(10)
        unknown = subprocess.run(
            [*as_nobody, python, "-P", "-m", "healthz.podctl", "--socket", str(socket),
             "logs", "nosuch"], capture_output=True, text=True, env=env, cwd="/", timeout=30,
            check=False)
        assert unknown.returncode == 4
        assert unknown.stderr == "podctl: no service named 'nosuch'\n"
    finally:
        pod.stop()


LINES = 200_000
MAXBYTES = 20_000  # about 1,300 lines a file: some 150 rotations
BACKUPS = 20
# The service: line 0, then (once the go file exists, so the follower is attached) the rest in
# bursts of 200 lines, as a chatty child writes.
WRITER = f"""
import os, sys, time
print("line 0", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.01)
for start in range(1, {LINES}, 200):
    sys.stdout.write("".join("line %d\\n" % i for i in range(start, min(start + 200, {LINES}))))
    sys.stdout.flush()
    time.sleep(0.002)
time.sleep(120)
"""


def _collect(stream: IO[bytes], into: list[bytes]) -> None:
    for raw in stream:
        into.append(raw)


def test_follow_through_the_socket_loses_nothing_across_rapid_rotation(base: Path) -> None:
    """200,000 lines through ~150 of the engine's rotations while `podctl logs -f` follows
    over the socket (the pod reads the files): each line once, in order."""
    (base / "writer.py").write_text(WRITER)
    go = base / "go"
    catalogue = write_catalogue(base / "catalogue", {"flood": {
        "command": f"{sys.executable} -u {base / 'writer.py'} {go}", "startsecs": "0",
        "stdout_logfile_maxbytes": str(MAXBYTES), "stdout_logfile_backups": str(BACKUPS)}})
    pod = started(RunningPod(catalogue, base / "home"))
    logs = base / "home" / "logs"
    follower = None
    try:
        wait_for(lambda: (logs / "flood.log").exists(), 15, "the flood's log")
        follower = subprocess.Popen(
            [*podctl_command(), "--socket", str(pod.run_dir / "podctl.sock"),
             "logs", "flood", "-n", "1", "-f"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
        seen: list[bytes] = []
        assert follower.stdout is not None
        threading.Thread(target=_collect, args=(follower.stdout, seen), daemon=True).start()
        wait_for(lambda: seen, 15, "line 0 from the follower")
        go.touch()
        wait_for(lambda: len(seen) >= LINES, 120, lambda: f"{LINES} lines, saw {len(seen)}")
        os.kill(follower.pid, signal.SIGTERM)
        assert follower.wait(30) == 0
        assert follower.stderr is not None
        assert follower.stderr.read() == b""
        assert len(list(logs.glob("flood.log.*"))) == BACKUPS  # it rotated, past the backups
        assert not pod.events("log_follow_gap")
        assert seen == [b"line %d\n" % i for i in range(LINES)]
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait(10)
        pod.stop()
