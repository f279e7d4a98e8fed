"""`make demo` as a person runs it, at a terminal: Ctrl-C drains the pod and make exits with
the pod's own code (0), not with make's death by SIGINT (130)."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.demo_support import BOOT_DEADLINE, HEALTH_PORT, busy_demo_ports, world_traversable_tmp
from tests.support import ROOT, http_get, wait_for

EXIT_DEADLINE = 30.0


def ready() -> bool:
    try:
        return http_get(f"http://127.0.0.1:{HEALTH_PORT}/readyz")[0] == 200
    except OSError:
        return False


def drain_output(fd: int, sink: bytearray) -> None:
    """Read what the terminal has for us, so the pod never blocks on a full pty."""
    while select.select([fd], [], [], 0)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        sink.extend(chunk)


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = {int(p) for p in (task / "children").read_text().split()}
                todo.extend(kids - found)
                found |= kids
    return found


def test_ctrl_c_at_the_terminal_exits_with_the_pods_code() -> None:
    """The pod gets the Ctrl-C alone (its own foreground group), drains, and `make demo`
    exits 0."""
    busy = busy_demo_ports()
    if busy:
        pytest.skip(f"the demo pod's fixed ports are in use: {', '.join(busy)}")
    if shutil.which("make") is None or shutil.which("nginx") is None:
        pytest.skip("needs make and nginx")
    base = world_traversable_tmp("coditect-make-demo-")
    env = {**os.environ, "CODITECT_HOME": str(base / "home"), "CODITECT_RUN": str(base / "run"),
           "CODITECT_WORKSPACE": str(base / "workspace"), "TERM": "dumb"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: make, as a session leader with the pty as its terminal
        os.chdir(ROOT)
        os.execvpe("make", ["make", "-s", "demo"], env)
    output = bytearray()
    status: int | None = None
    try:
        def up() -> bool:
            drain_output(fd, output)
            return ready()

        wait_for(up, BOOT_DEADLINE + 60, lambda: f"the demo ready\n{output[-2000:]!r}",
                 interval=0.1)
        os.write(fd, b"\x03")  # Ctrl-C, as the terminal sends it to its foreground group
        deadline = time.monotonic() + EXIT_DEADLINE
        while status is None and time.monotonic() < deadline:
            drain_output(fd, output)
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
            else:
                select.select([fd], [], [], 0.1)  # wait for output or the next look
        assert status is not None, f"make demo did not exit\n{output[-2000:]!r}"
        assert os.waitstatus_to_exitcode(status) == 0, output[-2000:]
    finally:
        if status is None:
            for child in descendants(pid) | {pid}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os.close(fd)
        shutil.rmtree(base, ignore_errors=True)
