"""Shared helpers for tests that run the real engine: catalogues on disk, a running pod whose
JSON event stream is collected, and deadline-bounded waits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.wait import wait_for as wait_for  # where the tests have always found it

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def unmeasured() -> dict[str, str]:
    """Our environment without coverage's variables: for a process whose memory or speed a test
    measures, which coverage (when `make test` measures the suite) would weigh down."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith("COVERAGE_")}


def write_catalogue(directory: Path, programs: dict[str, dict[str, str]],
                    health: dict[str, dict[str, str]] | None = None) -> Path:
    """A catalogue directory: supervisord.conf including conf.d/<name>.conf, one per program."""
    (directory / "conf.d").mkdir(parents=True, exist_ok=True)
    (directory / "supervisord.conf").write_text(
        "[supervisord]\nnodaemon=true\n\n[include]\nfiles = conf.d/*.conf\n")
    health = health or {}
    for name, keys in programs.items():
        text = f"[program:{name}]\n" + "".join(f"{k}={v}\n" for k, v in keys.items())
        if name in health:
            text += f"\n[health:{name}]\n" + "".join(f"{k}={v}\n"
                                                      for k, v in health[name].items())
        (directory / "conf.d" / f"{name}.conf").write_text(text)
    return directory


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    """GET `url`: the status and body, an HTTP error's too (5 s timeout; OSError when nothing
    answers)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def get(port: int, path: str) -> tuple[int, str]:
    """GET `path` on 127.0.0.1:`port`."""
    return http_get(f"http://127.0.0.1:{port}{path}")


class RunningPod:
    """`coditect-start` as a real process (optionally PID 1 of a new PID namespace)."""

    def __init__(self, catalogue: Path, home: Path, *, pid1: bool = False,
                 extra_args: Iterable[str] = (), env: dict[str, str] | None = None,
                 health_port: int | None = None, wrapper: Iterable[str] = ()) -> None:
        self.run_dir = home.parent / f"{home.name}-run"
        self.health_port = health_port or free_port()
        args = [PYTHON, "-m", "start", "--catalogue", str(catalogue), "--home", str(home),
                "--run-dir", str(self.run_dir), "--log-format", "json",
                "--health-addr", f"127.0.0.1:{self.health_port}", *extra_args]
        args = [*wrapper, *args]  # e.g. prlimit: what the container gives PID 1
        if pid1:
            args = ["unshare", "--pid", "--fork", "--mount-proc", *args]
        self.pid1 = pid1
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.started = time.monotonic()
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=environment, cwd=ROOT)
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr: list[str] = []
        self._stderr = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            text = raw.decode("utf-8", "replace")
            with self._lock:
                self.raw.append(text)
                with contextlib.suppress(ValueError):
                    self.lines.append(json.loads(text))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.stderr.append(raw.decode("utf-8", "replace"))

    @property
    def engine_pid(self) -> int:
        """The engine's pid as seen from here (the child of `unshare` when it is PID 1)."""
        if not self.pid1:
            return self.process.pid

        def child() -> int | None:
            path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            try:
                pids = path.read_text().split()
            except OSError:
                return None
            return int(pids[0]) if pids else None

        return int(wait_for(child, 10, "the namespace's PID 1"))

    def events(self, event: str | None = None, **match: Any) -> list[dict[str, Any]]:
        with self._lock:
            lines = list(self.lines)
        return [line for line in lines
                if (event is None or line.get("event") == event)
                and all(line.get(k) == v for k, v in match.items())]

    def wait_event(self, event: str, timeout: float = 10.0, count: int = 1,
                   **match: Any) -> list[dict[str, Any]]:
        matched: list[dict[str, Any]] = wait_for(
            lambda: (found := self.events(event, **match)) and len(found) >= count and found,
            timeout, lambda: f"{count} × {event} {match}\n{self.tail()}")
        return matched

    def tail(self, n: int = 15) -> str:
        with self._lock:
            return "".join(self.raw[-n:]) + "".join(self.stderr[-5:])

    def signal(self, signum: int) -> None:
        os.kill(self.engine_pid, signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            code = self.process.wait(timeout)
        finally:
            self._reader.join(5)
        return code

    def stop(self) -> None:
        """End it (and so its children) by pid, whatever state the test left it in."""
        if self.process.poll() is None:
            try:
                self.signal(signal.SIGTERM)
                self.process.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired, AssertionError):
                self.process.kill()
                self.process.wait(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(pid) and fields.get("State", "").startswith("Z"):
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
