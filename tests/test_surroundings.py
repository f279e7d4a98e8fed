"""Faults of the supervisor's own surroundings: the health port already taken,
container stdout closed by its reader, `CODITECT_HOME` full. Each is survived, or refused with
one clear line and the documented exit code."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from bench.pods import drain_then_kill
from tests.support import (
    PYTHON,
    ROOT,
    RunningPod,
    free_port,
    get,
    wait_for,
    write_catalogue,
)

# A child that never stops talking: one numbered line every 10 ms.
CHATTY = "sh -c 'i=0; while :; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done'"


def chatty_catalogue(directory: Path) -> Path:
    return write_catalogue(directory, {"chatty": {"command": CHATTY, "startsecs": "0"}})


def livez(port: int) -> bool:
    with contextlib.suppress(OSError):
        return get(port, "/livez")[0] == 200
    return False


def test_health_port_taken_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Something already listens on the health address: one line on stderr naming it, exit 1,
    and the children it had started are stopped again."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        pod = RunningPod(chatty_catalogue(tmp_path / "cat"), tmp_path / "home", health_port=port)
        try:
            assert pod.wait() == 1
            lines = [line for line in pod.stderr if line.strip()]
            assert len(lines) == 1, lines
            assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0], lines[0]
            assert "Traceback" not in "".join(pod.stderr)
            assert pod.events("exited", service="chatty")  # stopped, not left behind
        finally:
            pod.stop()


def test_closed_stdout_is_survived_and_counted(tmp_path: Path) -> None:
    """The reader of container stdout goes away: the pod keeps serving, every line still lands
    in the log file, and the lines stdout lost are counted in /metrics."""
    port = free_port()
    home = tmp_path / "home"
    process = subprocess.Popen(
        [PYTHON, "-m", "start", "--catalogue", str(chatty_catalogue(tmp_path / "cat")),
         "--home", str(home), "--run-dir", str(tmp_path / "run"), "--log-format", "json",
         "--health-addr", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert process.stdout is not None
        process.stdout.close()  # the reader is gone before the first line: EPIPE from now on
        wait_for(lambda: livez(port), 15, "/livez 200")
        log = home / "logs" / "chatty.log"
        wait_for(lambda: log.exists() and log.stat().st_size > 2000, 10, "chatty's lines")

        def dropped() -> float:
            _, text = get(port, "/metrics")
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("coditect_pod_log_lines_dropped_total"))

        wait_for(dropped, 10, "dropped stdout lines counted in /metrics")
        assert process.poll() is None and livez(port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        numbers = [int(line.split()[1]) for line in log.read_text().splitlines()]
        assert numbers == list(range(len(numbers)))  # the file copy lost nothing
    finally:
        drain_then_kill(process)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="a private tmpfs for CODITECT_HOME needs root and unshare")
def test_full_home_keeps_the_pod_running(tmp_path: Path) -> None:
    """`CODITECT_HOME` (a 2 MiB tmpfs in a private mount namespace) fills up: the pod keeps
    running and answering, says once which log it cannot write and why, loses none of the
    user's files, and writes the log again once there is room."""
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "stdout"
    argv = ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'mount -t tmpfs -o size=2m,mode=0755 full-home "$0" && exec "$@"',
            str(home), PYTHON, "-m", "start",
            "--catalogue", str(chatty_catalogue(tmp_path / "cat")), "--home", str(home),
            "--template", str(ROOT / "demo" / "template"), "--run-dir", str(tmp_path / "run"),
            "--log-format", "json", "--health-addr", f"127.0.0.1:{port}"]
    with out.open("wb") as stdout:
        process = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(lambda: livez(port), 15, "/livez 200")
        # The tmpfs exists only in the pod's mount namespace: reach it through its root.
        inside = Path(f"/proc/{process.pid}/root") / str(home).lstrip("/")
        log = inside / "logs" / "chatty.log"
        wait_for(log.exists, 10, "chatty's log")
        settings = (inside / "settings.json").read_bytes()
        filler = inside / "filler"
        with filler.open("wb") as stream, contextlib.suppress(OSError):
            while True:  # until ENOSPC
                stream.write(b"\0" * 65536)
                stream.flush()

        def failed() -> list[dict[str, object]]:
            events = [json.loads(line) for line in out.read_text().splitlines()
                      if line.startswith("{")]
            return [e for e in events if e.get("event") == "log_file_failed"
                    and "No space left" in str(e.get("error"))]

        reports = wait_for(failed, 15, "a log_file_failed event naming the full disk")
        def chatty_lines() -> int:
            return out.read_text().count('"line ')

        # Fifty more lines, each written into the full disk, then look again.
        seen = chatty_lines()
        wait_for(lambda: chatty_lines() >= seen + 50, 15, "fifty more of chatty's lines")
        assert process.poll() is None and livez(port)
        assert get(port, "/readyz")[0] == 200
        assert len(failed()) == len(reports) == 1  # said once, not once per line
        _, text = get(port, "/metrics")
        assert 'coditect_pod_log_write_failures_total{service="chatty"} 0.0' not in text
        assert 'coditect_pod_log_write_failures_total{service="chatty"}' in text
        assert (inside / "settings.json").read_bytes() == settings
        filler.unlink()
        size = log.stat().st_size
        wait_for(lambda: log.stat().st_size > size, 10, "the log written again")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        drain_then_kill(process)
