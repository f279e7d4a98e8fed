"""The pod's own check of the catalogue it runs from, for `GET /v1/check` (`podctl validate`).

A person's shell has neither the pod's environment nor, often, its overlay, so a check made
there reports problems the pod does not have. This one is made by the pod: `coditect-start
--check` with the pod's catalogue, overlay and environment, in a subprocess (a parse can take
seconds of CPU, which PID 1's event loop must never spend), reaped by the engine's reaper like
any child. Only findings come back: the check prints problems, warnings and notes, never the
values it expanded.

`check_catalogue` is the one function the control route reaches (through `Pod`), so it can
be pointed at another parse entry without touching the route.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Mapping

from healthz.model import CatalogueCheck
from start.errors import EXIT_CONFIG, EXIT_OK
from start.reaper import Reaper
from start.settings import Settings

CHECK_TIMEOUT = 60.0  # a parse that takes longer is a problem in itself
OUTPUT_LIMIT = 1 << 20  # at most 200 problems of a line each, and the notes


class CatalogueChecker:
    """Runs the check; requests that come while one runs share its answer."""

    def __init__(self, settings: Settings, reaper: Reaper,
                 env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.reaper = reaper
        self.env = env  # the pod's environment, secrets included; None: PID 1's own
        self._running: asyncio.Task[CatalogueCheck] | None = None

    async def check(self) -> CatalogueCheck:
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self.check_catalogue())
        # Shielded: one client giving up must not cancel the answer the others wait for.
        return await asyncio.shield(self._running)

    async def check_catalogue(self) -> CatalogueCheck:
        # Boot speed: `subprocess` only once someone asks, as for an exec probe.
        from start.execprobe import ReaperExecRunner

        settings = self.settings
        # -P: the pod's working directory is not searched for a `start` package.
        argv = [sys.executable, "-P", "-m", "start", "--check",
                "--catalogue", str(settings.catalogue)]
        if settings.overlay is not None:
            argv += ["--overlay", str(settings.overlay)]
        outcome = await ReaperExecRunner(self.reaper, OUTPUT_LIMIT, env=self.env)(
            argv, CHECK_TIMEOUT)
        found = findings(outcome.returncode, outcome.output.decode("utf-8", "replace"))
        return dataclasses.replace(
            found, catalogue=str(settings.catalogue),
            overlay=None if settings.overlay is None else str(settings.overlay))


def findings(returncode: int | None, output: str) -> CatalogueCheck:
    """`coditect-start --check`'s output sorted: problems (`coditect-start: …` lines),
    warnings, notes and the verdict line."""
    lines = [line for line in output.splitlines() if line.strip()]
    if returncode is None:
        return CatalogueCheck(valid=False, ran=False, summary="the check did not finish",
                              problems=(f"the catalogue check did not finish in "
                                        f"{CHECK_TIMEOUT:g}s",))
    if returncode == EXIT_OK:
        return CatalogueCheck(
            valid=True,
            warnings=tuple(line.removeprefix("warning: ") for line in lines
                           if line.startswith("warning: ")),
            notes=tuple(line.removeprefix("note: ") for line in lines
                        if line.startswith("note: ")),
            summary=next((line for line in lines if line.startswith("catalogue valid")), ""))
    said = [line.removeprefix("coditect-start: ") for line in lines
            if line.startswith("coditect-start: ")]
    if returncode == EXIT_CONFIG and said:
        return CatalogueCheck(valid=False, problems=tuple(said[:-1]), summary=said[-1])
    last = lines[-1] if lines else "no output"
    return CatalogueCheck(valid=False, ran=False, summary="the check could not run",
                          problems=(f"the catalogue check failed (exit {returncode}): {last}",))
