"""Log pumps of the real engine: lossless rotated files, JSON on stdout, a blocked stdout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from start.logs import CHUNK, MAX_PARTIAL_LINE
from tests.support import ROOT, RunningPod, wait_for, write_catalogue

LINES = 20_000
CHILD_KEYS = {"ts", "service", "stream", "pid", "message"}  # docs/EVENTS.md, "One stream"
EVENT_KEYS = CHILD_KEYS | {"level", "event", "logger"}
# Python, so the child writes fast and in big chunks: partial lines across reads happen.
WRITER = (f"{sys.executable} -c \"import sys; "
          "[sys.stdout.write('seq %%06d ' %% i + 'x' * (i %% 50) + chr(10)) "
          f"for i in range({LINES})]; sys.stderr.write('done' + chr(10))\"")


def _logged_sequence(logs: Path, name: str) -> list[int]:
    numbers: list[int] = []
    files = sorted(logs.glob(f"{name}.log*"),
                   key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    for path in files:  # oldest backup first, the live file last
        for line in path.read_bytes().splitlines():
            if line.startswith(b"seq "):
                numbers.append(int(line.split()[1]))
    return numbers


def test_every_line_lands_once_across_rotations(tmp_path: Path) -> None:
    """20,000 numbered lines through several rotations: each present exactly once, in order."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "writer": {"command": WRITER, "startsecs": "0", "autorestart": "false",
                   "stdout_logfile_maxbytes": "64KB", "stdout_logfile_backups": "50"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("exited", service="writer", timeout=20)
        logs = tmp_path / "home" / "logs"
        wait_for(lambda: len(_logged_sequence(logs, "writer")) >= LINES, 10, "every line")
        assert len(list(logs.glob("writer.log.*"))) >= 3  # it really rotated
        assert _logged_sequence(logs, "writer") == list(range(LINES))
        sizes = {path.name: path.stat().st_size for path in logs.glob("writer.log*")}
        # A file runs past maxbytes by at most one read and the partial line carried into it.
        assert all(size < 64 * 1024 + CHUNK + MAX_PARTIAL_LINE for size in sizes.values()), sizes
        # The container's stdout saw them too, one JSON object a line.
        wait_for(lambda: len(pod.events(None, service="writer", stream="stdout")) >= LINES, 10,
                 "every JSON line")
        first = pod.events(None, service="writer", stream="stdout")[0]
        assert set(first) == {"ts", "service", "stream", "pid", "message"}
        assert first["message"] == "seq 000000 "
        assert pod.events(None, service="writer", stream="stderr")[0]["message"] == "done"
    finally:
        pod.stop()


def test_blocked_stdout_never_blocks_a_child(tmp_path: Path) -> None:
    """Nobody reads the engine's stdout: the child still finishes, its file is complete, and
    the engine still drains on SIGTERM."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "writer": {"command": WRITER, "startsecs": "0", "autorestart": "false",
                   "stdout_logfile_maxbytes": "0"}})
    read_end, write_end = os.pipe()  # never read: fills after 64 KiB
    home = tmp_path / "home"
    engine = subprocess.Popen(
        [sys.executable, "-m", "start", "--catalogue", str(catalogue), "--home", str(home),
         "--run-dir", str(tmp_path / "run"), "--health-addr", "127.0.0.1:0",
         "--log-format", "json"],
        stdout=write_end, stderr=subprocess.DEVNULL, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(write_end)
    try:
        log = home / "logs" / "writer.log"
        wait_for(lambda: log.exists() and log.read_bytes().count(b"\n") >= LINES + 1, 20,
                 "the whole output in the file")
        began = time.monotonic()
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(15) == 0
        assert time.monotonic() - began < 10
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait(10)
        os.close(read_end)


def test_unwritable_log_file_never_stops_the_service(tmp_path: Path) -> None:
    """A service's log path that cannot be opened (here a directory): the service still runs,
    its lines still reach stdout, and one event says why, with no traceback."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "talker": {"command": "sh -c 'echo hello; exec sleep 100'", "startsecs": "0"}})
    (tmp_path / "home" / "logs" / "talker.log").mkdir(parents=True)
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        failed = pod.wait_event("log_file_failed", service="talker")[0]
        assert "talker.log" in failed["error"]
        wait_for(lambda: pod.events(None, service="talker", stream="stdout"), 10, "its line")
        assert pod.events(None, service="talker", stream="stdout")[0]["message"] == "hello"
        assert "Traceback" not in "".join(pod.stderr)
        pod.signal(signal.SIGTERM)
        assert pod.wait() == 0
    finally:
        pod.stop()


def _stdout_of(pod: RunningPod) -> list[dict[str, Any]]:
    with pod._lock:
        return list(pod.lines)


def test_the_engine_writes_its_events_and_a_childs_lines_in_order(tmp_path: Path) -> None:
    """A real engine: the child prints at once, while the engine still holds its events (boot);
    its `spawned` comes first all the same, every line's `ts` in order, each kind with its
    keys, and a child's JSON line embedded as an object."""
    said = json.dumps({"level": "info", "message": "watching", "root": "/workspace"})
    script = tmp_path / "talker.py"
    script.write_text(f"print('hello')\nprint({said!r}, flush=True)\n")
    catalogue = write_catalogue(tmp_path / "cat", {
        "talker": {"command": f"{sys.executable} {script}", "startsecs": "0",
                   "autorestart": "false"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("exited", service="talker", timeout=20)
        pod.wait_event("health_libraries_imported", timeout=20)
        lines = _stdout_of(pod)
        talker = [line for line in lines if line["service"] == "talker"]
        seen = [t.get("event") or t["message"] for t in talker
                if t.get("event") in (None, "spawned", "exited")]  # `ready` may come anywhere
        assert seen == ["spawned", "hello", "watching", "exited"]
        assert talker[0]["message"] == f"spawned talker pid={talker[0]['pid']}"
        assert next(t for t in talker if t["message"] == "watching")["json"] == json.loads(said)
        assert [line["ts"] for line in lines] == sorted(line["ts"] for line in lines)
        assert all(set(line) >= EVENT_KEYS for line in lines if line["stream"] == "event")
        assert all(set(line) - {"json"} == CHILD_KEYS
                   for line in lines if line["stream"] != "event")
    finally:
        pod.stop()
