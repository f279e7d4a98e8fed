"""The demo pod under soak: `coditect-start` as PID 1 of a new PID namespace, dropped to the
unprivileged user by `setpriv` (which execs it, so it is PID 1 itself), and what the driver
sees of it: its events, its processes (host pids), its RSS, its control socket.

`unshare --kill-child` takes the namespace down with it, and the driver's death takes
`unshare` down (PR_SET_PDEATHSIG): no pod outlives a soak, however it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench import wait
from bench.pods import die_with_parent, pid_in_namespace
from healthz.podctl_client import PodClient
from soak.errors import SoakError
from soak.sandbox import Account, Sandbox

ROOT = Path(__file__).resolve().parent.parent
HEALTH_PORT = 8081  # the demo's: nginx's /health proxies to it
STANDIN_SEQ_INTERVAL = 0.05  # seconds between numbered lines of each stand-in (20 a second)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    """The shared wait, failing with SoakError (what the soak reports)."""
    try:
        return wait.wait_for(predicate, timeout, what, interval)
    except wait.TimedOut as error:
        raise SoakError(str(error)) from None


class SoakPod:
    def __init__(self, box: Sandbox, account: Account) -> None:
        self.box = box
        venv_bin = Path(sys.executable).parent  # not resolved: the venv's own bin/
        env = {
            "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(box.tmp), "USER": account.name, "LOGNAME": account.name,
            "TMPDIR": str(box.tmp), "LANG": "C.UTF-8",
            "CODITECT_HOME": str(box.home), "CODITECT_RUN": str(box.run),
            "CODITECT_TEMPLATE": str(ROOT / "demo" / "template"),
            "CODITECT_WORKSPACE": str(box.workspace),
            "CODITECT_CATALOGUE": str(ROOT / "demo" / "soak"),
            "CODITECT_CATALOGUE_OVERLAY": str(ROOT / "demo" / "overlay.conf"),
            "CODITECT_HEALTH_ADDR": f"0.0.0.0:{HEALTH_PORT}",
            "CODITECT_LOG_FORMAT": "json",
            "JWT_SECRET": "soak-only-not-a-secret",
            "FDB_CLUSTER_FILE": str(ROOT / "demo" / "fdb.cluster"),
            "STANDIN_SEQ_INTERVAL": str(STANDIN_SEQ_INTERVAL),
            "PYTHONDONTWRITEBYTECODE": "1",  # the checkout is read-only: do not even try
        }
        argv = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--",
                "setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups",
                "--no-new-privs", "--",
                sys.executable, "-m", "start"]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env, cwd=str(box.tmp),
                                        preexec_fn=die_with_parent)
        self.events: list[dict[str, Any]] = []
        self.stdout_bytes = 0
        self.stdout_lines = 0
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()
        self.client = PodClient(str(box.run / "podctl.sock"), 5)
        self._pid1: int | None = None

    # -- output -------------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        """Read as fast as it comes (a slow reader would be a blocked stdout, another test):
        keep the engine's own events, count the children's lines."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        partial = b""
        while data := os.read(fd, 1 << 16):
            self.stdout_bytes += len(data)
            *lines, partial = (partial + data).split(b"\n")
            self.stdout_lines += len(lines)
            for line in lines:
                # The engine's events have `"stream": "event"` (docs/EVENTS.md, "One stream");
                # a child's embedded JSON may hold that text too, hence the parse's check.
                if b'"stream": "event"' in line:
                    with contextlib.suppress(ValueError), self._lock:
                        if (parsed := json.loads(line)).get("stream") == "event":
                            self.events.append(parsed)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    def events_named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("event") == name]

    # -- processes ----------------------------------------------------------------------------

    @property
    def pid1(self) -> int:
        """The host pid of the namespace's PID 1: coditect-start (setpriv exec'd it)."""
        if self._pid1 is None:
            def child() -> int | None:
                try:
                    kids = psutil.Process(self.process.pid).children()
                except psutil.NoSuchProcess:
                    raise SoakError(f"the pod exited: {self.why()}") from None
                return kids[0].pid if kids else None

            self._pid1 = int(wait_for(child, 10, "the namespace's PID 1"))
        return self._pid1

    def tree(self) -> list[psutil.Process]:
        """PID 1 and every process below it."""
        try:
            root = psutil.Process(self.pid1)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def host_pid(self, ns_pid: int) -> int | None:
        """The host pid of the process whose pid inside the namespace is `ns_pid`."""
        return next((p.pid for p in self.tree() if pid_in_namespace(p.pid) == ns_pid), None)

    def rss(self) -> int:
        """PID 1's resident set, bytes."""
        return int(psutil.Process(self.pid1).memory_info().rss)

    # -- asking -------------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        answer = self.client.call("GET", "/v1/status")
        return {s["name"]: s for s in answer["services"]}

    def alive(self) -> bool:
        return self.process.poll() is None

    def why(self) -> str:
        return f"exit code {self.process.poll()}; stderr: {' | '.join(self.stderr_tail)}"

    # -- ending -------------------------------------------------------------------------------

    def drain(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM to PID 1, as the kubelet sends it; (exit code, seconds it took)."""
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid1, signal.SIGTERM)
        try:
            code: int | None = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - began

    def close(self) -> None:
        """End it whatever state it is in: SIGKILL to `unshare` (by pid) takes the namespace."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for thread in self._threads:
            thread.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
