"""`podctl logs`: tails, rotation and truncation, with real files and a real process."""

from __future__ import annotations

import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from healthz.logstream import tail_start
from healthz.podctl import main
from healthz.podctl_logs import Follower, last_lines, tail

DEADLINE = 10.0


def lines(first: int, last: int) -> bytes:
    return b"".join(b"line %d\n" % i for i in range(first, last + 1))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("content", "count", "want", "found"),
    [
        (b"", 5, b"", 0),
        (b"a\nb\nc\n", 2, b"b\nc\n", 2),
        (b"a\nb\nc", 2, b"b\nc", 2),
        (b"a\nb\n", 5, b"a\nb\n", 2),
        (b"a\n\n\n", 2, b"\n\n", 2),
        (b"a\nb\n", 0, b"", 0),
    ],
)
def test_last_lines(content: bytes, count: int, want: bytes, found: int) -> None:
    """The last N lines, an unterminated last line counting as one."""
    assert last_lines(io.BytesIO(content), len(content), count) == (want, found)


@pytest.mark.parametrize(
    "content",
    [b"", b"a\nb\nc\n", b"a\nb\nc", b"a\n\n\n", b"\n", b"x", lines(1, 30_000),
     lines(1, 9_000) + b"y" * 200_000, b"z" * 150_000 + b"\n" + lines(1, 3)],
)
@pytest.mark.parametrize("count", [0, 1, 2, 3, 10, 25_000, 40_000])
def test_the_pods_tail_agrees_with_podctls(content: bytes, count: int) -> None:
    """`GET /v1/logs` finds where the last N lines start without holding them (tail_start):
    the same lines and count as `last_lines`, across blocks and long lines."""
    want, found = last_lines(io.BytesIO(content), len(content), count)
    start, counted = tail_start(io.BytesIO(content), len(content), count)
    assert (content[start:], counted) == (want, found)


def test_without_a_pod_logs_reads_the_file_and_says_so(home: Path, capsys: Any) -> None:
    """No pod behind the socket: the file is read here, and stderr says why."""
    (home / "logs" / "theia.log").write_bytes(lines(1, 5))
    env = {"CODITECT_HOME": str(home), "CODITECT_RUN": str(home / "no-run")}
    assert main(["logs", "theia", "-n", "2"], env=env) == 0
    said = capsys.readouterr()
    assert said.out == "line 4\nline 5\n"
    assert said.err.startswith("podctl: no pod to ask (pod unreachable: no socket at ")
    assert said.err.endswith("; reading the log file here\n")


def test_last_lines_across_blocks() -> None:
    """Lines longer than the read block and files of many blocks come back whole."""
    long = b"x" * 200_000
    content = lines(1, 50_000) + long + b"\n" + b"tail\n"
    assert last_lines(io.BytesIO(content), len(content), 3) == (
        b"line 50000\n" + long + b"\ntail\n",
        3,
    )


def test_tail_reaches_into_the_rotated_file(home: Path) -> None:
    """Just after a rotation the current file is short; the rest comes from `.1`."""
    log = home / "logs" / "nginx.log"
    Path(f"{log}.1").write_bytes(lines(1, 10))
    log.write_bytes(lines(11, 12))
    with open(log, "rb", buffering=0) as f:
        assert tail(str(log), f, log.stat().st_size, 4) == lines(9, 12)


def test_logs_prints_the_last_lines(home: Path, capsys: Any) -> None:
    """`logs NAME -n 3 --home DIR` prints the last three lines, from DIR/logs."""
    (home / "logs" / "theia.log").write_bytes(lines(1, 20))
    assert main(["logs", "theia", "-n", "3", "--home", str(home)], env={}) == 0
    assert capsys.readouterr().out == "line 18\nline 19\nline 20\n"


def test_logs_of_a_missing_file_is_one_line(home: Path, capsys: Any) -> None:
    """No log file: exit 1, one line naming the path."""
    assert main(["logs", "nope", "--home", str(home)], env={}) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no log at {home}/logs/nope.log" in err


@pytest.mark.parametrize("name", ["../secret", "..", "logs/../../secret", "/etc/passwd"])
def test_logs_never_leaves_the_logs_directory(home: Path, name: str, capsys: Any) -> None:
    """A name that would climb out of logs/ is refused before any path is built."""
    (home / "secret.log").write_text("SECRET\n")
    (home / "logs" / "..log").write_text("SECRET\n")
    assert main(["logs", name, "--home", str(home)], env={}) == 2
    captured = capsys.readouterr()
    assert "SECRET" not in captured.out + captured.err
    assert "bad service name" in captured.err


class Sink:
    """A binary stream for the follower that a test can wait on."""

    def __init__(self) -> None:
        self.data = b""
        self._changed = threading.Condition()

    def write(self, chunk: bytes) -> int:
        with self._changed:
            self.data += chunk
            self._changed.notify_all()
        return len(chunk)

    def flush(self) -> None:
        pass

    def wait_for(self, predicate: Callable[[bytes], bool]) -> bytes:
        with self._changed:
            ok = self._changed.wait_for(lambda: predicate(self.data), timeout=DEADLINE)
        assert ok, f"not seen within {DEADLINE}s; have {self.data[-200:]!r}"
        return self.data


class CountingStop(threading.Event):
    """The follower's stop event, counting the quiet polls it waits through."""

    def __init__(self) -> None:
        super().__init__()
        self.polls = 0
        self._polled = threading.Condition()

    def wait(self, timeout: float | None = None) -> bool:
        with self._polled:
            self.polls += 1
            self._polled.notify_all()
        return super().wait(timeout)

    def wait_for_polls(self, more: int) -> None:
        with self._polled:
            target = self.polls + more
            assert self._polled.wait_for(lambda: self.polls >= target, timeout=DEADLINE)


@pytest.fixture
def follow(home: Path) -> Iterator[tuple[Path, Sink, CountingStop]]:
    """A follower on logs/svc.log in a thread (polling every 10 ms), stopped afterwards."""
    path = home / "logs" / "svc.log"
    path.write_bytes(lines(1, 3))
    sink = Sink()
    stop = CountingStop()
    log = open(path, "rb", buffering=0)  # noqa: SIM115 - the follower closes it
    follower = Follower(str(path), log, sink, interval=0.01, stop=stop)
    thread = threading.Thread(target=follower.run)
    thread.start()
    yield path, sink, stop
    stop.set()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    follower.close()


def test_follow_across_rotation(follow: tuple[Path, Sink, CountingStop]) -> None:
    """Lines written to the old file after the rename still come out, before the new file's,
    each once and in order."""
    path, sink, _stop = follow
    sink.wait_for(lambda d: d.endswith(b"line 3\n"))
    with open(path, "ab") as writer:  # the writer keeps its descriptor across the rename
        writer.write(lines(4, 100))
        writer.flush()
        os.rename(path, f"{path}.1")
        writer.write(lines(101, 200))
        writer.flush()
        with open(path, "ab") as fresh:
            fresh.write(lines(201, 300))
    sink.wait_for(lambda d: d.endswith(b"line 300\n"))
    with open(path, "ab") as fresh:
        fresh.write(lines(301, 310))
    assert sink.wait_for(lambda d: d.endswith(b"line 310\n")) == lines(1, 310)


def test_follow_across_truncation(follow: tuple[Path, Sink, CountingStop]) -> None:
    """A file truncated in place (copytruncate) is read again from its start."""
    path, sink, _stop = follow
    sink.wait_for(lambda d: d.endswith(b"line 3\n"))
    with open(path, "r+b") as f:
        f.truncate(0)
    path.write_bytes(b"new 1\n")
    assert sink.wait_for(lambda d: d.endswith(b"new 1\n")) == lines(1, 3) + b"new 1\n"


def test_follow_waits_for_the_new_file(follow: tuple[Path, Sink, CountingStop]) -> None:
    """Between the rename and the new file there is nothing to open; it is picked up later."""
    path, sink, stop = follow
    sink.wait_for(lambda d: d.endswith(b"line 3\n"))
    os.rename(path, f"{path}.1")
    stop.wait_for_polls(2)  # the follower has looked while no file was there
    path.write_bytes(lines(4, 5))
    assert sink.wait_for(lambda d: d.endswith(b"line 5\n")) == lines(1, 5)


def read_lines(stream: IO[bytes], into: queue.Queue[bytes]) -> None:
    for line in iter(stream.readline, b""):
        into.put(line)


def expect(got: queue.Queue[bytes], want: bytes) -> None:
    deadline = time.monotonic() + DEADLINE
    seen = b""
    while seen != want:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"saw {seen!r}, wanted {want!r}"
        seen += got.get(timeout=remaining)
        assert want.startswith(seen), f"saw {seen!r}, wanted {want!r}"


def test_logs_follow_as_a_process(home: Path) -> None:
    """`podctl logs -f` as a process: follows a rotation, and SIGTERM ends it quietly with 0."""
    path = home / "logs" / "codi2.log"
    path.write_bytes(lines(1, 5))
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthz.podctl", "--home", str(home), "logs", "codi2", "-n",
         "2", "-f"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        got: queue.Queue[bytes] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=read_lines, args=(proc.stdout, got), daemon=True).start()
        expect(got, lines(4, 5))
        os.rename(path, f"{path}.1")
        path.write_bytes(lines(6, 8))
        expect(got, lines(6, 8))
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0
        assert proc.stderr is not None and proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=DEADLINE)
