"""`exec:` probes run by the engine. Our reaper owns waitpid(-1), so asyncio's child watcher
must not: this runner spawns with Popen and learns the exit status from the reaper."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

from healthz.marks import HELPER_MARK
from healthz.probes import ExecOutcome
from start.fdlimit import restore_in_child
from start.reaper import Reaper

OUTPUT_LIMIT = 4096
KILL_GRACE = 5.0


class ReaperExecRunner:
    def __init__(self, reaper: Reaper, output_limit: int = OUTPUT_LIMIT,
                 env: Mapping[str, str] | None = None) -> None:
        self.reaper = reaper
        self.output_limit = output_limit
        # One service's probes' environment (start.childenv); None: PID 1's own.
        self.env = None if env is None else dict(env)

    async def __call__(self, argv: Sequence[str], timeout: float) -> ExecOutcome:
        loop = asyncio.get_running_loop()
        # Popen returns once the child is exec'd; the reaper (not asyncio) waits for it.
        # The helper mark: /metrics counts what no service accounts for, and a probe's
        # command is the engine's own, not a stray.
        popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL,  # noqa: ASYNC220
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env={**(os.environ if self.env is None else self.env),
                                      HELPER_MARK: "exec-probe"},
                                 start_new_session=True, preexec_fn=restore_in_child())
        exited = self.reaper.wait_for(popen.pid)
        assert popen.stdout is not None
        fd = popen.stdout.fileno()
        os.set_blocking(fd, False)
        output = bytearray()
        eof = loop.create_future()

        def readable() -> None:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                loop.remove_reader(fd)
                if not eof.done():
                    eof.set_result(None)
                return
            room = self.output_limit - len(output)
            if room > 0:
                output.extend(chunk[:room])

        loop.add_reader(fd, readable)
        returncode: int | None = None
        try:
            async with asyncio.timeout(timeout):
                status = await asyncio.shield(exited)
                returncode = os.waitstatus_to_exitcode(status)
                _kill_group(popen.pid)  # leftovers would hold the pipe open
                await eof
        except TimeoutError:
            pass
        finally:
            _kill_group(popen.pid)
            try:
                if not exited.done():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(KILL_GRACE):
                            await asyncio.shield(exited)  # a second cancel must not end it
            finally:
                # The reaper owns the pid: Popen must never waitpid it, not even from __del__.
                popen.returncode = (os.waitstatus_to_exitcode(exited.result())
                                    if exited.done() else -signal.SIGKILL)
                loop.remove_reader(fd)
                popen.stdout.close()
        return ExecOutcome(returncode=returncode, output=bytes(output))


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
