"""aiohttp and the health service: imported when first needed during the boot, not at once.

At boot the services start together, and their start-up is a burst of CPU (interpreters and
runtimes loading). Importing aiohttp and the health service costs about 200 ms of CPU; done
right after the spawns it competes with them for the CPU, and on a 2-core pod that delays the
slowest service's start by tens of milliseconds. So the engine imports them when something
needs them: the first web probe of a service whose port answers (that service, at least, is
done starting), or `IMPORT_AT_LATEST` after the spawns for the health server.

(A thread of low CPU priority was tried first and was slower: the import holds the GIL, and the
loop waited for a thread the scheduler kept off the CPU.)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
from collections.abc import Iterator

MODULES = ("aiohttp", "healthz.server")
IMPORT_AT_LATEST = 0.5  # seconds after the boot's spawns


class DeferredImport:
    """The boot's import of `MODULES`: waits for a first user or the deadline, then imports on
    the loop's thread (an import is not something a coroutine can be interrupted in)."""

    def __init__(self, modules: tuple[str, ...] = MODULES) -> None:
        self.modules = modules
        self.wanted = asyncio.Event()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self, at_latest: float = IMPORT_AT_LATEST) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wanted.wait(), at_latest)
        try:
            with no_ca_bundle():
                for name in self.modules:
                    importlib.import_module(name)
        except BaseException as error:  # handed to whoever awaits: they decide what it means
            self.done.set_exception(error)
            return
        self.done.set_result(None)


_pending: DeferredImport | None = None


def defer_import() -> DeferredImport:
    """The boot's deferred import; `ready()` asks for it and waits until it is done."""
    global _pending
    _pending = DeferredImport()
    return _pending


async def ready(*, ask: bool = True) -> None:
    """Return once aiohttp can be used: at once outside a boot (tests, `podctl`, later on).
    `ask`: have the import done now; without it, wait for whenever it happens."""
    pending = _pending
    if pending is None:
        return
    if not pending.done.done():
        if ask:
            pending.wanted.set()
        await asyncio.shield(pending.done)
    pending.done.result()


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
