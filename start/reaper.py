"""The one place that calls waitpid: every child is reaped here, ours and adopted orphans.

SIGCHLD only wakes the loop (asyncio's wakeup fd); the handler drains every exited child with
WNOHANG and hands each status to whoever registered that pid. Anything unregistered is an
orphan we adopted as PID 1 (or as a child subreaper) and is simply counted.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

from start.process import become_subreaper

__all__ = ["Reaper", "become_subreaper", "describe_status"]

ExitCallback = Callable[[int], None]  # receives the raw wait status


class Reaper:
    def __init__(self) -> None:
        self._watchers: dict[int, ExitCallback] = {}
        self.orphans_reaped = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()  # children may have exited before the handler existed

    def uninstall(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._loop = None

    def watch(self, pid: int, on_exit: ExitCallback) -> None:
        """Call `on_exit(status)` when `pid` is reaped. Register before yielding to the loop."""
        self._watchers[pid] = on_exit

    def wait_for(self, pid: int) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def done(status: int) -> None:
            if not future.done():
                future.set_result(status)

        self.watch(pid, done)
        return future

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            callback = self._watchers.pop(pid, None)
            if callback is None:
                self.orphans_reaped += 1
            else:
                callback(status)


def describe_status(status: int) -> tuple[str, int]:
    """("exit 1", 1) or ("signal 9 (SIGKILL)", -9): for people and for metrics."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "?"
        return f"signal {number} ({name})", -number
    code = os.waitstatus_to_exitcode(status)
    return f"exit {code}", code
