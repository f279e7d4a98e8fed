"""`podctl logs -f` on the files (`--home`) loses nothing across rotation: 200,000 lines
through the engine's own rotation (small files, rotated many times between two looks), each
exactly once, in order. Through the socket: tests/test_podctl_asks_the_pod.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from healthz.podctl_logs import Follower
from tests.support import ROOT, wait_for

LINES = 200_000
MAXBYTES = 20_000  # about 1,300 lines a file: some 150 rotations
BACKUPS = 20

# A separate writer process: the engine's ServiceLog, fed chunks of whole lines as a pump
# would, a little at a time (a child's output arrives in reads, not all at once). It writes
# line 0, waits for "go" on stdin (the follower has it by then), then the rest.
WRITER = f"""
import sys, time
from pathlib import Path
from start.logs import ServiceLog
log = ServiceLog(Path(sys.argv[1]), {MAXBYTES}, {BACKUPS}, on_error=sys.exit)
log.write(b"line 0\\n")
sys.stdin.readline()
for start in range(1, {LINES}, 200):
    log.write(b"".join(b"line %d\\n" % i for i in range(start, min(start + 200, {LINES}))))
    time.sleep(0.002)
log.close()
"""


def _collect(stream: IO[bytes], into: list[bytes]) -> None:
    for raw in stream:
        into.append(raw)


def test_follow_sees_every_line_once_in_order_through_rapid_rotation(tmp_path: Path) -> None:
    """200,000 lines, ~150 rotations while `podctl logs -f` follows: nothing missing, nothing
    twice, nothing out of order, and no warning of lost lines."""
    logs = tmp_path / "home" / "logs"
    logs.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CODITECT_HOME": str(tmp_path / "home")}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(logs / "svc.log")],
                              stdin=subprocess.PIPE, env=env, cwd=ROOT)
    follower = None
    try:
        wait_for(lambda: (logs / "svc.log").exists(), 15, "the writer's log")
        follower = subprocess.Popen(
            [sys.executable, "-m", "healthz.podctl", "--home", str(tmp_path / "home"), "logs",
             "svc", "-n", "1", "-f"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen: list[bytes] = []
        assert follower.stdout is not None
        threading.Thread(target=_collect, args=(follower.stdout, seen), daemon=True).start()
        wait_for(lambda: seen, 15, "line 0 from the follower")
        assert writer.stdin is not None
        writer.stdin.write(b"go\n")
        writer.stdin.close()
        assert writer.wait(120) == 0
        began = time.monotonic()
        wait_for(lambda: len(seen) >= LINES, 60, lambda: f"{LINES} lines, saw {len(seen)}")
        time.sleep(min(0.5, time.monotonic() - began + 0.3))  # anything after the last line
        os.kill(follower.pid, signal.SIGTERM)
        assert follower.wait(30) == 0
        assert follower.stderr is not None
        assert follower.stderr.read() == b""
        assert len(list(logs.glob("svc.log.*"))) == BACKUPS  # it did rotate, past the backups
        assert seen == [b"line %d\n" % i for i in range(LINES)]
    finally:
        for proc in (writer, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_a_file_rotated_away_unread_is_said_and_following_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The held file rotated past the backups (deleted) before its successor was reached:
    the follower finishes it, goes on with the oldest file left and the newest, and says on
    stderr that lines may be missing."""
    path = tmp_path / "svc.log"
    path.write_bytes(b"a1\n")
    out = _Lines()
    with open(path, "rb", buffering=0) as held:
        follower = Follower(str(path), held, out, interval=0.01)
        os.rename(path, f"{path}.1")  # backups=1: a → .1, b new; b → .1 (a deleted), c new
        path.write_bytes(b"b1\n")
        os.rename(path, f"{path}.1")
        path.write_bytes(b"c1\n")
        runner = threading.Thread(target=follower.run, daemon=True)
        runner.start()
        try:
            wait_for(lambda: out.data == b"a1\nb1\nc1\n", 10, lambda: f"three lines: {out.data!r}")
        finally:
            follower.stop.set()
            runner.join(10)
        follower.close()
    assert "lines may be missing" in capsys.readouterr().err


class _Lines:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass
