"""A reload's parse, in a child process under a time and a memory limit, so that the event loop
that answers /livez never waits for the parser.

The child (`start.catalogue.isolated`) is started with Popen and reaped by our reaper, which
owns waitpid(-1) (asyncio's child watcher must not); its answer is read from a pipe without
blocking. At the time limit its process group is SIGKILLed; the memory limit is RLIMIT_AS, set
between fork and exec, so the kernel refuses the allocation that would pass it. Either way the
reload fails with one line saying which limit and how to raise it, and the running catalogue
stays.

The boot does not come here: a cold boot parses in PID 1 before anything runs (nothing to keep
answering yet, and a child would delay the first spawn by the interpreter's start, ~60 ms), and
a warm boot spawns from the cache without parsing. A warm boot's later check of the cached
catalogue does come here: the health port is open by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import pickle
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from start.catalogue import Catalogue
from start.catalogue.isolated import BOOTSTRAP, EXIT_OUT_OF_MEMORY
from start.errors import ConfigError, ParseFailed
from start.fdlimit import restore_in_child
from start.reaper import Reaper, describe_status
from start.settings import ReloadLimits

MAX_ANSWER = 32 << 20  # bytes of pickle; 1000 services are ~2 MiB
KILL_GRACE = 5.0  # seconds for the kernel to let us reap a SIGKILLed child
# The directory that holds the `start` package, first on the child's path (BOOTSTRAP).
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def _limit_memory(memory: int, restore_fds: Callable[[], None] | None) -> None:
    """Between fork and exec: one C call each, nothing imported."""
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    if restore_fds is not None:
        restore_fds()


class IsolatedParser:
    """Parses the catalogue in a child for each `parse`; `kill` ends the one running (a drain)."""

    def __init__(self, reaper: Reaper, limits: ReloadLimits,
                 env: Mapping[str, str] | None = None) -> None:
        self.reaper = reaper
        self.limits = limits
        self.env = None if env is None else dict(env)  # None: PID 1's own
        self._running: set[int] = set()

    def kill(self) -> None:
        for pid in self._running:
            _kill_group(pid)

    async def parse(self, location: Path, overlay: Path | None) -> Catalogue:
        """The catalogue as `start.catalogue.load` gives it; ConfigError when it is invalid,
        ParseFailed when the child gave no answer."""
        limits = self.limits
        popen = subprocess.Popen(  # noqa: ASYNC220  # returns once exec'd; the reaper waits
            [sys.executable, "-c", BOOTSTRAP, PACKAGE_ROOT, str(location),
             "" if overlay is None else str(overlay)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True, env=self.env,
            preexec_fn=functools.partial(_limit_memory, limits.memory_mib << 20,
                                         restore_in_child()))
        exited = self.reaper.wait_for(popen.pid)  # before yielding: it may exit at once
        self._running.add(popen.pid)
        assert popen.stdout is not None
        try:
            async with asyncio.timeout(limits.seconds):
                data = await _read_all(popen.stdout.fileno(), MAX_ANSWER)
                status = await asyncio.shield(exited)
        except TimeoutError:
            raise ParseFailed("time_limit", (
                f"the catalogue took longer than {limits.seconds:g} s to parse, and the parse "
                "was stopped; make it smaller, or raise CODITECT_RELOAD_TIMEOUT")) from None
        finally:
            self._running.discard(popen.pid)
            try:
                if not exited.done():  # the time limit, or a cancelled reload (a drain)
                    _kill_group(popen.pid)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(KILL_GRACE):
                            await asyncio.shield(exited)
            finally:
                # The reaper owns the pid: Popen must never waitpid it, not even from __del__.
                popen.returncode = -signal.SIGKILL
                popen.stdout.close()
        return _answer(data, status, limits)


def _answer(data: bytes | None, status: int, limits: ReloadLimits) -> Catalogue:
    if data is None:
        raise ParseFailed("too_large", (
            f"the parsed catalogue is larger than {MAX_ANSWER >> 20} MiB; make it smaller"))
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_OUT_OF_MEMORY:
        raise ParseFailed("memory_limit", (
            f"parsing the catalogue needed more than {limits.memory_mib} MiB of memory, and "
            "the parse was stopped; make it smaller, or raise CODITECT_RELOAD_MEMORY"))
    try:
        kind, value = pickle.loads(data)  # noqa: S301  # our own child's answer
    except Exception:
        raise ParseFailed("crashed", (
            f"the catalogue's parser ended without an answer ({describe_status(status)[0]}); "
            f"if the parse needs more than {limits.memory_mib} MiB, raise "
            "CODITECT_RELOAD_MEMORY")) from None
    if kind == "valid" and isinstance(value, Catalogue):
        return value
    if kind == "invalid" and isinstance(value, list):
        raise ConfigError([str(problem) for problem in value])
    raise ParseFailed("crashed", f"the catalogue's parser failed: {value}")


async def _read_all(fd: int, limit: int) -> bytes | None:
    """Everything written to the pipe `fd` until its end; None past `limit` bytes."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    size = 0
    done: asyncio.Future[bytes | None] = loop.create_future()

    def readable() -> None:
        nonlocal size
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        size += len(chunk)
        if chunk and size <= limit:
            chunks.append(chunk)
            return
        loop.remove_reader(fd)
        if not done.done():
            done.set_result(None if size > limit else b"".join(chunks))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
