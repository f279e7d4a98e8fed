"""s6's readiness notification (`ready=fd:N`): the child writes a newline to descriptor N
when it is ready. The write end of a pipe is its fd N (start.process); PID 1 reads the other
end on its event loop, a few bytes at a time, and closes it once the newline came, the child
closed it, or more than `MAX_BYTES` came without one (a child that writes its logs there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

READ_BYTES = 512
MAX_BYTES = 4096  # s6 expects a newline alone; this much without one is not a notification


class ReadyFd:
    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_ready: Callable[[], None]) -> None:
        self._loop = loop
        self._fd: int | None = fd
        self._on_ready = on_ready
        self._seen = 0
        loop.add_reader(fd, self._readable)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._loop.remove_reader(fd)
            os.close(fd)

    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._seen += len(data)
        if b"\n" in data:
            self.close()
            self._on_ready()
        elif not data or self._seen > MAX_BYTES:
            with contextlib.suppress(OSError):
                self.close()
