"""A supervisor under test, run as PID 1 of its own PID namespace, and what the harness sees of it.

`Pod` starts `unshare --pid --fork --mount-proc --kill-child CMD`, so the namespace dies with
`unshare`, and `unshare` dies with the harness (PR_SET_PDEATHSIG): no PID namespace outlives a
run, however it ends. Everything is ended by pid, never by name.

`Marks` is the FIFO every child writes `up NAME PID` to before it execs (bench/children/mark):
the same signal for every supervisor, timestamped by the harness on arrival.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import wait

ROOT = Path(__file__).resolve().parent.parent
CHILDREN = ROOT / "bench" / "children"
PR_SET_PDEATHSIG = 1
STOP_LINE = b"bench: stop reading"

_live: set[Pod] = set()


def drain_then_kill(process: subprocess.Popen[bytes]) -> None:
    """End an engine we started: SIGTERM first, so it stops its children (each in a session of
    its own, which a SIGKILL of the engine would leave running), then SIGKILL if it does not
    end within 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def die_with_parent() -> None:
    """preexec_fn: the child is SIGKILLed when the process that started it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# The benchmarks' wait polls every 2 ms, not the tests' 10: a boot is timed by it.
wait_for = functools.partial(wait.wait_for, interval=0.002)


def pid_in_namespace(pid: int) -> int | None:
    """The pid that host process `pid` has in its own (innermost) PID namespace; None when it
    is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return pid  # a kernel without NSpid: no namespaces to translate


@dataclass(frozen=True, slots=True)
class Line:
    at: float  # time.monotonic() when the harness read it
    text: str


class _LineCollector:
    """Reads a byte stream line by line in a thread, timestamping each line on arrival."""

    def __init__(self, fd: int, keep: Callable[[str], bool] = lambda _text: True) -> None:
        self.lines: list[Line] = []
        self._fd = fd
        self._keep = keep
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        partial = b""
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except OSError:
                data = b""
            now = time.monotonic()
            if not data:
                return
            *complete, partial = (partial + data).split(b"\n")
            if STOP_LINE in complete:  # Marks.close(): a blocked read is not woken by close()
                return
            fresh = [Line(now, raw.decode("utf-8", "replace")) for raw in complete]
            fresh = [line for line in fresh if self._keep(line.text)]
            if fresh:
                with self._changed:
                    self.lines.extend(fresh)
                    self._changed.notify_all()

    def wait(self, predicate: Callable[[list[Line]], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = predicate(self.lines)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
                self._changed.wait(left)

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)


class Marks(_LineCollector):
    """The FIFO children announce themselves on: lines `up NAME PID` (PID inside the ns)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "marks"
        os.mkfifo(self.path)
        # Opened read-write so that it never reads end-of-file between writers.
        super().__init__(os.open(self.path, os.O_RDWR))

    def ups(self, name: str | None = None, since: float = 0.0) -> list[Line]:
        return [line for line in list(self.lines) if line.at >= since
                and (name is None or line.text.split()[1] == name)]

    def wait_ups(self, count: int, timeout: float, name: str | None = None,
                 since: float = 0.0) -> list[Line]:
        def enough(lines: list[Line]) -> list[Line] | None:
            found = [line for line in lines if line.at >= since
                     and (name is None or line.text.split()[1] == name)]
            return found if len(found) >= count else None

        result: list[Line] = self.wait(enough, timeout, f"{count} children up ({name or 'any'})")
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._fd, STOP_LINE + b"\n")
        self.join()
        with contextlib.suppress(OSError):
            os.close(self._fd)


class Pod:
    """`argv` as PID 1 of a fresh PID namespace; its stdout collected as timestamped lines."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
                 stdout: Path | None = None, cwd: Path = ROOT) -> None:
        self.argv = list(argv)
        environment = {**os.environ, **(env or {})}
        out: Any = subprocess.PIPE if stdout is None else stdout.open("wb")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the pod)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *self.argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=self._stderr, env=environment,
            cwd=cwd, preexec_fn=die_with_parent)
        if stdout is not None:
            out.close()
        _live.add(self)
        self.output: _LineCollector | None = None
        if self.process.stdout is not None:
            self.output = _LineCollector(self.process.stdout.fileno(),
                                         keep=lambda text: text.startswith("{"))
        self._pid1: int | None = None

    @property
    def pid1(self) -> int:
        """The host pid of the namespace's PID 1 (the child of `unshare`)."""
        if self._pid1 is None:
            path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")

            def child() -> int | None:
                try:
                    pids = path.read_text().split()
                except OSError:
                    return None
                return int(pids[0]) if pids else None

            self._pid1 = int(wait_for(child, 10, "the namespace's PID 1"))
        return self._pid1

    def host_pid(self, ns_pid: int) -> int:
        """Translate a pid as seen inside the namespace to the host's pid."""
        for pid in self.tree():
            if pid_in_namespace(pid) == ns_pid:
                return pid
        raise LookupError(f"no process with pid {ns_pid} in the namespace")

    def tree(self) -> list[int]:
        """Host pids of PID 1 and all its descendants."""
        import psutil

        try:
            root = psutil.Process(self.pid1)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def events(self, event: str | None = None, **match: Any) -> list[tuple[float, dict[str, Any]]]:
        """Our engine's JSON events (arrival time, object), optionally filtered."""
        found = []
        for line in list(self.output.lines if self.output else []):
            with contextlib.suppress(ValueError):
                obj = json.loads(line.text)
                if (event is None or obj.get("event") == event) and all(
                        obj.get(k) == v for k, v in match.items()):
                    found.append((line.at, obj))
        return found

    def wait_event(self, event: str, timeout: float, count: int = 1,
                   since: float = 0.0, **match: Any) -> list[tuple[float, dict[str, Any]]]:
        assert self.output is not None

        def enough(_lines: list[Line]) -> list[tuple[float, dict[str, Any]]] | None:
            found = [e for e in self.events(event, **match) if e[0] >= since]
            return found if len(found) >= count else None

        result: list[tuple[float, dict[str, Any]]] = self.output.wait(
            enough, timeout, f"{count} x {event} {match}")
        return result

    def signal(self, signum: int) -> float:
        """Signal PID 1; returns the monotonic time just before the signal was sent."""
        pid = self.pid1
        sent = time.monotonic()
        os.kill(pid, signum)
        return sent

    def wait_exit(self, timeout: float) -> float:
        """Wait for `unshare` to return (PID 1 and so the whole namespace gone); its time.
        Woken by a pidfd, not by Popen.wait(timeout), which polls with doubling sleeps and
        so rounds a 9 ms exit up to 15.5 ms and a 17 ms one to 31.5 ms."""
        pidfd = os.pidfd_open(self.process.pid)
        try:
            if not select.select([pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.process.args, timeout)
            ended = time.monotonic()
        finally:
            os.close(pidfd)
        self.process.wait(5)
        return ended

    def stderr_tail(self, size: int = 2000) -> str:
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - size))
        return self._stderr.read().decode("utf-8", "replace")

    def close(self) -> None:
        """End the namespace at once (SIGKILL to its PID 1, by pid) and collect `unshare`."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, TimeoutError):
                os.kill(self.pid1, signal.SIGKILL)
            # `unshare` returns once PID 1 is reaped, which the kernel allows only after every
            # other process of the namespace is gone: wait for that, so no listener of this
            # pod is still closing when the next one starts.
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.output is not None:
            self.output.join()
        self._stderr.close()
        _live.discard(self)

    def __enter__(self) -> Pod:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def close_all(report: Callable[[str], None] | None = None) -> None:
    """End every namespace still running (the harness is exiting, maybe on an error);
    `report` is given what each one wrote on stderr."""
    for pod in list(_live):
        if report is not None:
            report(f"{pod.argv[0]} wrote on stderr:\n{pod.stderr_tail()}")
        pod.close()


@contextlib.contextmanager
def workdir(prefix: str) -> Any:
    """A scratch directory removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-") as path:
        yield Path(path)
