"""The boot's deferred import of aiohttp and the health service (healthz.libraries): done when
a probe first needs it or at the deadline, never before, and its failure reaches the waiters."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthz import libraries


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of our own, so that whether it was imported yet can be seen."""
    name = f"deferred_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(libraries, "_pending", None)
    yield name
    sys.modules.pop(name, None)


async def test_without_a_user_the_import_waits_for_its_deadline(module: str) -> None:
    deferred = libraries.defer_import()
    deferred.modules = (module,)
    loop = asyncio.get_running_loop()
    began = loop.time()
    task = asyncio.create_task(deferred.run(at_latest=0.3))
    await asyncio.sleep(0.1)
    assert module not in sys.modules
    waiting = asyncio.create_task(libraries.ready(ask=False))  # the server: waits, asks nothing
    await asyncio.wait_for(waiting, 5)
    assert module in sys.modules
    assert loop.time() - began >= 0.3
    await task


async def test_a_probe_that_needs_it_has_it_imported_at_once(module: str) -> None:
    deferred = libraries.defer_import()
    deferred.modules = (module,)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(deferred.run(at_latest=60))
    await asyncio.sleep(0.05)
    began = loop.time()
    await asyncio.wait_for(libraries.ready(), 5)
    assert module in sys.modules
    assert loop.time() - began < 5
    await task


async def test_a_failed_import_reaches_every_waiter() -> None:
    deferred = libraries.defer_import()
    deferred.modules = ("no_such_module_anywhere_here",)
    task = asyncio.create_task(deferred.run(at_latest=60))
    with pytest.raises(ModuleNotFoundError):
        await asyncio.wait_for(libraries.ready(), 5)
    with pytest.raises(ModuleNotFoundError):
        await asyncio.wait_for(libraries.ready(ask=False), 5)
    await task
    libraries._pending = None


async def test_outside_a_boot_nothing_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libraries, "_pending", None)
    await asyncio.wait_for(libraries.ready(), 1)
