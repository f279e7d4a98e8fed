"""The pod: every service, their order, the drain and reload. Implements `healthz.model.Pod`.

Start order: `priority` (then name) decides the spawn sequence; `after` holds a service back
until what it names is ready (or has used up its start_timeout). Stop order is the reverse of
`after`: a service stops once everything that runs after it has stopped; services that nothing
orders stop in parallel, all inside one deadline.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable

from healthz.model import CatalogueCheck, PodSnapshot, State, UnknownService, VerbFailed
from start import homecheck
from start.catalogue import Catalogue
from start.errors import ConfigError
from start.looplag import LoopLag
from start.service import EngineContext, Service

KILL_REAP_GRACE = 3.0  # after a SIGKILL, how long to wait for the kernel to let us reap


class Pod:
    def __init__(
        self,
        catalogue: Catalogue,
        ctx: EngineContext,
        loader: Callable[[], Catalogue] | None = None,
        checker: Callable[[], Awaitable[CatalogueCheck]] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.ctx = ctx
        self.loader = loader
        self.checker = checker
        self.services = ctx.services
        for spec in catalogue.services:
            self.services[spec.name] = Service(spec, ctx)
        self.draining = False
        self.started_up = False
        self.booted_at = time.time()
        self.reload_errors: tuple[str, ...] = ()
        self._lag = LoopLag(ctx.loop)  # measured when asked: no heartbeat waking PID 1
        self._reloading = asyncio.Lock()  # one reload at a time (SIGHUP beside a file change)

    # -- boot ---------------------------------------------------------------------------------

    def boot(self) -> None:
        """Spawn what can start now, in priority order, before anything else happens."""
        # Every autostart service counts as wanted from the first, so a service earlier in
        # priority order still waits for a dependency that comes later in it.
        coming = {spec.name for spec in self.catalogue.services if spec.autostart}
        for spec in self.catalogue.services:
            if spec.autostart:
                service = self.services[spec.name]
                service.request_start(service.dependencies(), coming)

    def loop_lag(self) -> float:
        return self._lag.read()

    # -- faces --------------------------------------------------------------------------------

    def snapshot(self) -> PodSnapshot:
        services = tuple(s.snapshot() for s in self.services.values())
        if not self.started_up and all(s.ever_ready for s in self.services.values()
                                       if s.spec.health.critical and s.spec.autostart):
            self.started_up = True
        return PodSnapshot(services=services, draining=self.draining,
                           started_up=self.started_up, booted_at=self.booted_at,
                           reload_errors=self.reload_errors, home_problems=homecheck.problems())

    def pids_of(self, name: str) -> list[int]:
        return self._get(name).pids()

    async def check_catalogue(self) -> CatalogueCheck:
        if self.checker is None:
            return CatalogueCheck(valid=False, ran=False, summary="no check",
                                  problems=("this pod was started without a catalogue to "
                                            "check",))
        return await self.checker()

    def log_path(self, name: str) -> str:
        return str(self.ctx.logs_dir / f"{name}.log")

    def _get(self, name: str) -> Service:
        service = self.services.get(name)
        if service is None:
            raise UnknownService(name)
        return service

    # -- verbs --------------------------------------------------------------------------------

    async def start_service(self, name: str) -> str:
        service = self._get(name)
        if self.draining:
            raise VerbFailed(f"{name}: not started, the pod is draining")
        if service.state in (State.STARTING, State.RUNNING):
            return f"{name}: already {service.state.value}"
        service.request_start(service.dependencies())
        return await self._outcome_of_start(service)

    async def _outcome_of_start(self, service: Service) -> str:
        """Wait until the start is decided: ready (ok), or given up / dead (VerbFailed)."""
        await service.wait_until(lambda: service.ready or service.state in (
            State.BACKOFF, State.FATAL, State.EXITED, State.STOPPED),
            service.spec.health.start_timeout + 1)
        if not service.ready:
            raise VerbFailed(f"{service.name}: {_describe(service)}")
        return f"{service.name}: {_describe(service)}"

    async def stop_service(self, name: str) -> str:
        service = self._get(name)
        if service.pid is None and service.state in (State.STOPPED, State.EXITED):
            return f"{name}: already {service.state.value}"
        await service.stop()
        if service.pid is not None:
            raise VerbFailed(f"{name}: {_describe(service)}")
        return f"{name}: {_describe(service)}"

    async def restart_service(self, name: str) -> str:
        service = self._get(name)
        if self.draining:
            raise VerbFailed(f"{name}: not restarted, the pod is draining")
        stopping = service.restart("manual", service.dependencies())
        if stopping is not None:
            await stopping
        return await self._outcome_of_start(service)

    async def signal_service(self, name: str, signum: int) -> str:
        service = self._get(name)
        signame = signal.Signals(signum).name
        if not service.send_signal(signum):
            raise VerbFailed(f"{name}: not running, {signame} not sent")
        group = service.pid or "?"
        return f"{name}: sent {signame} to process group {group}"

    # -- reload -------------------------------------------------------------------------------

    async def reload(self) -> tuple[bool, list[str]]:
        if self.loader is None:
            return False, ["this pod was started without a catalogue to re-read"]
        async with self._reloading:
            return await self._reload(self.loader)

    async def apply(self, catalogue: Catalogue) -> tuple[bool, list[str]]:
        """Apply a catalogue already parsed, as a reload applies the one it reads."""
        async with self._reloading:
            return await self._reload(lambda: catalogue)

    async def _reload(self, loader: Callable[[], Catalogue]) -> tuple[bool, list[str]]:
        if self.draining:  # a reload now would bring back what the drain is stopping
            self.ctx.emit("reload_ignored", reason="draining", level="warning")
            return False, ["the pod is draining; the catalogue was not re-read"]
        try:
            new = loader()
        except ConfigError as error:
            self.reload_errors = tuple(error.problems)
            if self.ctx.metrics is not None:
                self.ctx.metrics.count_reload_failure()
            self.ctx.emit("reload_rejected", problems=error.problems, level="error")
            return False, ["catalogue rejected, the running pod is unchanged:", *error.problems]
        self.reload_errors = ()
        old = {name: service.spec for name, service in self.services.items()}
        fresh = {spec.name: spec for spec in new.services}
        removed = [name for name in old if name not in fresh]
        added = [spec for spec in new.services if spec.name not in old]
        changed = [spec for spec in new.services if spec.name in old and spec != old[spec.name]]
        self.catalogue = new
        await asyncio.gather(*(self.services[name].stop() for name in removed))
        for name in removed:
            del self.services[name]
        for spec in changed:
            if self.draining:  # began while this reload waited for a stop
                self.services[spec.name].adopt_spec(spec)
                continue
            stopping = self.services[spec.name].reconfigure(spec)
            if stopping is not None:
                await stopping
        for spec in added:
            self.services[spec.name] = Service(spec, self.ctx)
        for spec in added:
            if spec.autostart and not self.draining:
                service = self.services[spec.name]
                service.request_start(service.dependencies())
        messages = [f"added {s.name}" for s in added] + [f"removed {n}" for n in removed]
        messages += [f"changed {s.name} (restarted)" for s in changed]
        self.ctx.emit("reloaded", added=[s.name for s in added], removed=removed,
                      changed=[s.name for s in changed])
        return True, messages or ["no change"]

    # -- drain --------------------------------------------------------------------------------

    async def drain(self, timeout: float) -> bool:
        """Stop everything in reverse `after` order inside `timeout` seconds.

        True when every child stopped before the deadline; False when the deadline had to
        SIGKILL what was left."""
        self.draining = True
        deadline = self.ctx.clock() + timeout
        self.ctx.emit("draining", timeout_seconds=timeout)
        dependents: dict[str, list[str]] = {name: [] for name in self.services}
        for service in self.services.values():
            for dependency in service.spec.after:
                if dependency in dependents:
                    dependents[dependency].append(service.name)
        tasks: dict[str, asyncio.Task[None]] = {}

        async def stop_after_dependents(service: Service) -> None:
            await asyncio.gather(*(tasks[d] for d in dependents[service.name]))
            await service.stop(deadline)

        for service in self.services.values():
            tasks[service.name] = asyncio.ensure_future(stop_after_dependents(service))
        everything = asyncio.gather(*tasks.values())
        in_time = True
        try:
            await asyncio.wait_for(asyncio.shield(everything), timeout=timeout + 0.05)
        except TimeoutError:
            in_time = False
            for service in self.services.values():
                service.drain_kill()
            try:
                await asyncio.wait_for(everything, timeout=KILL_REAP_GRACE)
            except TimeoutError:
                self.ctx.emit("drain_incomplete", level="error")
        if any(s.killed_at_deadline for s in self.services.values()):
            in_time = False
        self._lag.close()
        for service in self.services.values():
            service.close_pumps()
        self.ctx.emit("drained", in_time=in_time)
        return in_time


def _describe(service: Service) -> str:
    text = service.state.value
    if service.pid is not None:
        text += f", pid {service.pid}"
        text += ", ready" if service.ready else ", not ready"
    if service.reason:
        text += f" ({service.reason})"
    return text
