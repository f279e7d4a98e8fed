"""aiohttp and the health service: imported once the services' start-up burst is over.

At boot the services start together, and their start-up is a burst of CPU (interpreters and
runtimes loading). Importing aiohttp and the health service costs about 200 ms of CPU; done
right after the spawns it competes with them, and on a 2-core pod that delays the slowest
service's start by as much. So the engine's boot (`start.boot`, which owns what is put off
and when) imports them once none of the services' processes has been runnable for
`QUIET_SAMPLES` looks `QUIET_PERIOD` apart (they are waiting: on a port, a disk, a sleep), or
`IMPORT_AT_LATEST` after the spawns, whichever comes first. A web probe and the health server
wait for it (`ready()`); bare connects to a port that refuses need no aiohttp and go on
meanwhile.

(A thread of low CPU priority was tried first and was slower: the import holds the GIL, and the
loop waited for a thread the scheduler kept off the CPU.)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
from collections.abc import Callable, Iterable, Iterator

MODULES = ("aiohttp", "healthz.server")
IMPORT_AT_LATEST = 0.5  # seconds after the boot's spawns
QUIET_PERIOD = 0.01  # seconds between two looks at the services' processes
QUIET_SAMPLES = 2  # looks in a row that find none of them runnable


class DeferredImport:
    """The boot's import of `MODULES`: once `busy()` has been false for QUIET_SAMPLES looks in a
    row, or at the deadline; on the loop's thread (an import cannot yield to the loop)."""

    def __init__(self, modules: tuple[str, ...] = MODULES,
                 busy: Callable[[], bool] = lambda: False) -> None:
        self.modules = modules
        self.busy = busy
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # For the boot's timeline (the `health_libraries_imported` event): why and when.
        self.cause = ""
        self.waited = 0.0
        self.took = 0.0

    async def run(self, at_latest: float = IMPORT_AT_LATEST) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + at_latest
        quiet = 0
        while quiet < QUIET_SAMPLES and loop.time() < deadline:
            await asyncio.sleep(QUIET_PERIOD)
            quiet = 0 if self.busy() else quiet + 1
        self.cause = "quiet" if quiet >= QUIET_SAMPLES else "deadline"
        self.waited = loop.time() - began
        try:
            with no_ca_bundle():
                for name in self.modules:
                    importlib.import_module(name)
        except BaseException as error:  # handed to whoever awaits: they decide what it means
            self.done.set_exception(error)
            return
        finally:
            self.took = loop.time() - began - self.waited
        self.done.set_result(None)


_pending: DeferredImport | None = None


def defer_import(busy: Callable[[], bool] = lambda: False) -> DeferredImport:
    """The boot's deferred import; `ready()` waits until it is done."""
    global _pending
    _pending = DeferredImport(busy=busy)
    return _pending


async def ready() -> None:
    """Return once aiohttp can be used: at once outside a boot (tests, `podctl`, later on)."""
    pending = _pending
    if pending is None:
        return
    if not pending.done.done():
        await asyncio.shield(pending.done)
    pending.done.result()


def any_runnable(pids: Iterable[int]) -> bool:
    """Whether any of these processes is running or waiting for a CPU (state R in /proc).
    Read directly, not with psutil: psutil comes with the health service, in the import this
    decides the moment of."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                # "pid (comm) S ...": comm may hold spaces and parentheses; the state follows
                # the last ')'.
                if stat.read().rpartition(b")")[2][1:2] == b"R":
                    return True
        except OSError:
            continue  # gone, or no /proc here: not keeping anyone from the CPU
    return False


@contextlib.contextmanager
def no_ca_bundle() -> Iterator[None]:
    """aiohttp builds a verifying TLS context when imported, parsing the system's whole CA
    bundle (about 2 MiB that stays resident). Nothing here verifies a certificate: probes
    skip the check by design and the health service speaks no TLS. So point OpenSSL at no
    bundle while aiohttp is imported, then put the environment back for everything else."""
    saved = {name: os.environ.get(name) for name in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    os.environ.update(SSL_CERT_FILE=os.devnull, SSL_CERT_DIR=os.devnull)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
