"""Running an ``exec:`` probe's command: the swappable runner and the default one.

The runner is a seam because the engine reaps every child with ``waitpid(-1)``, which would
steal the exit status from asyncio's child watcher; it hands :func:`run_probe` its own runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

OUTPUT_LIMIT = 4096  # bytes of a probe command's output kept; the rest is read and dropped
_KILL_GRACE = 5.0  # seconds to wait for a SIGKILLed group to be reaped and its pipe closed


@dataclass(frozen=True, slots=True)
class ExecOutcome:
    """How a probe command ended: `returncode` is None when it was killed at the timeout,
    negative (-signal) when a signal ended it. `output` is stdout and stderr, bounded."""

    returncode: int | None
    output: bytes = b""


class ExecRunner(Protocol):
    """Runs `argv` to completion or until `timeout`, then leaves nothing of it behind.

    May raise OSError when the command cannot be started (not found, not executable)."""

    async def __call__(self, argv: Sequence[str], timeout: float) -> ExecOutcome: ...


class SubprocessExecRunner:
    """The default runner: asyncio subprocess in a session of its own, so that a timeout, a
    cancellation or the command's own exit kills its whole process group."""

    def __init__(self, output_limit: int = OUTPUT_LIMIT) -> None:
        self.output_limit = output_limit

    async def __call__(self, argv: Sequence[str], timeout: float) -> ExecOutcome:
        transport, protocol = await self._spawn(argv)
        pgid = transport.get_pid()
        returncode: int | None = None
        # The futures are shielded: a timeout or cancellation must not cancel the futures
        # themselves, the cleanup below asks them whether the command has ended.
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(protocol.exited)
                returncode = transport.get_returncode()
                # Anything the command left running in its group dies with it; that also
                # closes the output pipe those leftovers would otherwise hold open.
                _kill_group(pgid)
                await asyncio.shield(protocol.closed)
        except TimeoutError:
            pass
        finally:
            if not protocol.exited.done():
                _kill_group(pgid)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_KILL_GRACE):
                        await asyncio.shield(protocol.exited)
            # Closes our end of the pipe, should something outside the group still hold it.
            transport.close()
        return ExecOutcome(returncode=returncode, output=bytes(protocol.output))

    async def _spawn(
        self, argv: Sequence[str]
    ) -> tuple[asyncio.SubprocessTransport, _CommandProtocol]:
        loop = asyncio.get_running_loop()
        spawn = asyncio.ensure_future(
            loop.subprocess_exec(
                lambda: _CommandProtocol(loop, self.output_limit),
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        try:
            return await asyncio.shield(spawn)
        except asyncio.CancelledError:
            # The command may be running already (the spawn finishes after the fork): let the
            # spawn complete, then kill its group, or a cancelled probe would leave it behind.
            with contextlib.suppress(Exception):
                transport, _ = await spawn
                _kill_group(transport.get_pid())
                transport.close()
            raise


class _CommandProtocol(asyncio.SubprocessProtocol):
    """Keeps the first `limit` bytes of output and tells when the command ended (`exited`)
    and when its output pipe closed too (`closed`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.limit = limit
        self.output = bytearray()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        room = self.limit - len(self.output)
        if room > 0 and isinstance(data, bytes):
            self.output += data[:room]

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        # Called once the process has exited and every pipe has closed.
        if not self.closed.done():
            self.closed.set_result(None)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
