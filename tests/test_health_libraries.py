"""The boot's deferred import of aiohttp and the health service (healthz.libraries): done once
the services' processes are quiet or at the deadline, never before; its failure reaches every
waiter; and the look at the processes reads real /proc states."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthz import libraries
from tests.support import wait_for


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of our own, so that whether it was imported yet can be seen."""
    name = f"deferred_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(libraries, "_pending", None)
    yield name
    sys.modules.pop(name, None)


class Busy:
    """The services' business as the deferred import sees it; `asked` is set once it has
    looked twice (and so has decided, twice, not to import yet)."""

    def __init__(self) -> None:
        self.value = True
        self.looks = 0
        self.asked = asyncio.Event()

    def __call__(self) -> bool:
        self.looks += 1
        if self.looks >= 2:
            self.asked.set()
        return self.value


async def test_while_the_services_are_busy_the_import_waits_for_its_deadline(
        module: str) -> None:
    """Busy services: nothing is imported until at_latest has passed, then it is."""
    busy = Busy()
    deferred = libraries.defer_import(busy=busy)
    deferred.modules = (module,)
    loop = asyncio.get_running_loop()
    began = loop.time()
    task = asyncio.create_task(deferred.run(at_latest=0.3))
    await asyncio.wait_for(busy.asked.wait(), 5)
    assert module not in sys.modules
    await asyncio.wait_for(libraries.ready(), 5)
    assert module in sys.modules
    assert loop.time() - began >= 0.3
    await task


async def test_once_the_services_are_quiet_the_import_comes_at_once(module: str) -> None:
    """Busy services hold the import back; once they are quiet it comes, long before the
    deadline."""
    busy = Busy()
    deferred = libraries.defer_import(busy=busy)
    deferred.modules = (module,)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(deferred.run(at_latest=60))
    await asyncio.wait_for(busy.asked.wait(), 5)
    assert module not in sys.modules
    busy.value = False
    began = loop.time()
    await asyncio.wait_for(libraries.ready(), 5)
    assert module in sys.modules
    assert loop.time() - began < 5
    await task


async def test_a_failed_import_reaches_every_waiter() -> None:
    deferred = libraries.defer_import()
    deferred.modules = ("no_such_module_anywhere_here",)
    task = asyncio.create_task(deferred.run(at_latest=60))
    for _ in range(2):
        with pytest.raises(ModuleNotFoundError):
            await asyncio.wait_for(libraries.ready(), 5)
    await task
    libraries._pending = None


async def test_outside_a_boot_nothing_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libraries, "_pending", None)
    await asyncio.wait_for(libraries.ready(), 1)


def test_any_runnable_tells_a_spinning_process_from_a_sleeping_one() -> None:
    sleeping = subprocess.Popen(["sleep", "30"])
    spinning = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        wait_for(lambda: libraries.any_runnable([spinning.pid]), 10, "the spinner on a CPU")
        # Right after the fork the sleeper is still exec'ing (runnable); then it sleeps.
        wait_for(lambda: not libraries.any_runnable([sleeping.pid]), 10, "the sleeper asleep")
        assert libraries.any_runnable([sleeping.pid, spinning.pid])
        assert not libraries.any_runnable([])
        gone = sleeping.pid
    finally:
        for process in (sleeping, spinning):
            process.kill()
            process.wait()
    assert not libraries.any_runnable([gone])  # no such process: nobody is kept waiting
