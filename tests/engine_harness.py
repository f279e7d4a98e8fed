"""The engine in-process, with real child processes: a Pod over a real reaper and real pipes.
Only the pacing (backoff base and cap, what counts as stable) is shrunk so tests stay short."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bench.wait import until as until  # where the engine tests have always found it
from start.catalogue import Catalogue
from start.catalogue import load as load_catalogue
from start.lifecycle import Pacing
from start.logs import Console
from start.pod import Pod
from start.reaper import Reaper
from start.service import EngineContext


class Recorder:
    """Stands where structlog would: keeps (monotonic time, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        self.events.append((time.monotonic(), event, fields))

    def named(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [f for _, e, f in self.events
                if e == event and all(f.get(k) == v for k, v in match.items())]

    def times(self, event: str, **match: Any) -> list[float]:
        return [t for t, e, f in self.events
                if e == event and all(f.get(k) == v for k, v in match.items())]


@asynccontextmanager
async def running_pod(catalogue_dir: Path, logs_dir: Path, **pacing: float
                      ) -> AsyncIterator[tuple[Pod, Recorder]]:
    loop = asyncio.get_running_loop()
    reaper = Reaper()
    reaper.install(loop)
    sink = os.open(os.devnull, os.O_WRONLY)
    console = Console(sink, fmt="json")
    console.attach(loop)
    recorder = Recorder()
    logs_dir.mkdir(parents=True, exist_ok=True)
    ctx = EngineContext(loop=loop, reaper=reaper, console=console, emit=recorder,
                        logs_dir=logs_dir, base_env=dict(os.environ), pacing=Pacing(**pacing))
    catalogue: Catalogue = load_catalogue(catalogue_dir)

    async def reload() -> Catalogue:
        return load_catalogue(catalogue_dir)

    pod = Pod(catalogue, ctx, loader=reload)
    pod.boot()
    try:
        yield pod, recorder
    finally:
        await pod.drain(5)
        reaper.uninstall()
        console.detach()
        os.close(sink)
