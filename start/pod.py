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
from collections.abc import Awaitable, Callable, Collection

from healthz.model import (
    CatalogueCheck,
    PodSnapshot,
    RunRefused,
    RunRequest,
    State,
    UnknownService,
    VerbFailed,
)
from start import homecheck
from start.catalogue import Catalogue, ServiceSpec
from start.errors import ConfigError, ParseFailed
from start.looplag import LoopLag
from start.service import EngineContext, Service
from start.strays import mark_of
from start.transient import transient_spec

KILL_REAP_GRACE = 3.0  # after a SIGKILL, how long to wait for the kernel to let us reap

Loader = Callable[[], Awaitable[Catalogue]]  # a fresh catalogue, parsed off the event loop


class Pod:
    def __init__(
        self,
        catalogue: Catalogue,
        ctx: EngineContext,
        loader: Loader | None = None,
        checker: Callable[[], Awaitable[CatalogueCheck]] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.ctx = ctx
        self.loader = loader
        self.checker = checker
        self.services = ctx.services
        for spec in catalogue.services:
            self.services[spec.name] = self._new_service(spec)
        self.draining = False
        self.started_up = False
        self.booted_at = time.time()
        self.reload_errors: tuple[str, ...] = ()
        self._lag = LoopLag(ctx.loop)  # measured when asked: no heartbeat waking PID 1
        self._reloading = asyncio.Lock()  # one reload at a time (SIGHUP beside a file change)
        self._queued: asyncio.Task[tuple[bool, list[str]]] | None = None  # waits for the lock

    # -- boot ---------------------------------------------------------------------------------

    def boot(self) -> None:
        """Spawn what can start now, in priority order, before anything else happens."""
        # Every autostart service counts as wanted from the first, so a service earlier in
        # priority order still waits for a dependency that comes later in it.
        coming = {spec.name for spec in self.catalogue.services if spec.autostart}
        for spec in self.catalogue.services:
            if spec.autostart:
                self._autostart(self.services[spec.name], coming)

    def _new_service(self, spec: ServiceSpec) -> Service:
        """A service of the catalogue; a `once=volume` task whose stamp matches begins done."""
        done = False
        if spec.task is not None and spec.task.once == "volume":
            # Only a catalogue with such a task pays for the import (coditect_init's writes).
            from start.taskstamp import done_before

            done = done_before(self.ctx.logs_dir.parent, spec)
        return Service(spec, self.ctx, done_before=done)

    def _autostart(self, service: Service, coming: Collection[str] = ()) -> None:
        if service.spec.task is not None and service.ever_ready:
            self.ctx.emit("task_skipped", service=service.name, why="stamp matches")
            return
        service.request_start(service.dependencies(), coming)

    def loop_lag(self) -> float:
        return self._lag.read()

    # -- faces --------------------------------------------------------------------------------

    def snapshot(self) -> PodSnapshot:
        # Transient services after the catalogue's, whichever a reload added last.
        services = tuple(s.snapshot() for s in sorted(self.services.values(),
                                                      key=lambda s: s.spec.transient))
        if not self.started_up and all(s.ever_ready for s in self.services.values()
                                       if s.spec.health.critical and s.spec.autostart):
            self.started_up = True
        return PodSnapshot(services=services, draining=self.draining,
                           started_up=self.started_up, booted_at=self.booted_at,
                           reload_errors=self.reload_errors, home_problems=homecheck.problems(),
                           seeded=homecheck.seeding_span(),
                           notify_ignored=notify.ignored if (notify := self.ctx.notify) else 0)

    def on_notify(self, pid: int, fields: dict[str, str]) -> bool:
        """Hand an sd_notify datagram from `pid` to the service whose current run it belongs
        to (its process, or a descendant carrying the run's mark); False when none does."""
        services = self.services.values()
        owner = next((s for s in services if s.carries(pid, None)), None)
        # Not a service's own process: its environment names its run, if any (read only now,
        # for a datagram from a descendant, e.g. a shell's systemd-notify).
        if owner is None and (mark := mark_of(pid)) is not None:
            owner = next((s for s in services if s.carries(pid, mark)), None)
        if owner is None:
            return False
        owner.on_notify(fields)
        return True

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
            message = f"{name}: already {service.state.value}"
        else:
            await service.stop()
            if service.pid is not None:
                raise VerbFailed(f"{name}: {_describe(service)}")
            message = f"{name}: {_describe(service)}"
        if service.spec.transient and not self.draining:
            self._remove_transient(service, "stopped")
            message += ", removed (transient)"
        return message

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

    async def run_transient(self, request: RunRequest) -> str:
        """Add a transient service (start.transient) and start it; a stopped or exited one of
        the same name is replaced. It is the pod's child, not the caller's: its run and its
        mark are its own, so nothing that ends the caller's run reaches it."""
        name = request.name
        if self.draining:
            raise RunRefused(f"{name}: not started, the pod is draining", conflict=True)
        if self.catalogue.get(name) is not None:
            raise RunRefused(f"{name!r} is a service of the catalogue: choose another name",
                             conflict=True)
        spec = transient_spec(request, self.ctx.base_env, self.catalogue.secret_names)
        previous = self.services.get(name)
        if previous is not None:
            if previous.want_running or previous.pid is not None:
                raise RunRefused(f"transient service {name!r} is {previous.state.value}: "
                                 f"`podctl stop {name}` first", conflict=True)
            self._remove_transient(previous, "replaced")
        service = Service(spec, self.ctx)
        self.services[name] = service
        self.ctx.emit("transient_added", service=name)
        service.request_start([])
        try:
            return await self._outcome_of_start(service)
        except VerbFailed as failed:  # it stays, retried as any service is: say how to end it
            raise VerbFailed(f"{failed}; retried until `podctl stop {name}`") from None

    def _remove_transient(self, service: Service, why: str) -> None:
        if self.services.get(service.name) is service:  # not one that replaced it meanwhile
            del self.services[service.name]
            service.retire()
            self.ctx.emit("transient_removed", service=service.name, why=why)

    # -- reload -------------------------------------------------------------------------------

    async def reload(self) -> tuple[bool, list[str]]:
        """Re-read the catalogue and apply the difference. Requests are coalesced: while one
        reload runs, every new request joins the one queued behind it (which reads the files
        after all of them came), so a SIGHUP storm is at most one running and one queued."""
        loader = self.loader
        if loader is None:
            return False, ["this pod was started without a catalogue to re-read"]
        if self._queued is None:
            self._queued = asyncio.ensure_future(self._when_free(loader))
        # Shielded: a caller that goes away (a podctl client) must not cancel the others' reload.
        return await asyncio.shield(self._queued)

    async def _when_free(self, loader: Loader) -> tuple[bool, list[str]]:
        async with self._reloading:
            self._queued = None  # running now: a request from here on queues the next one
            return await self._reload(loader)

    async def apply(self, catalogue: Catalogue) -> tuple[bool, list[str]]:
        """Apply a catalogue already parsed, as a reload applies the one it reads."""
        async def parsed() -> Catalogue:
            return catalogue

        async with self._reloading:
            return await self._reload(parsed)

    async def _reload(self, loader: Loader) -> tuple[bool, list[str]]:
        if self.draining:  # a reload now would bring back what the drain is stopping
            return self._ignored()
        try:
            new = await loader()
        except ConfigError as error:
            self.ctx.emit("reload_rejected", problems=error.problems, level="error")
            return self._refused(error.problems,
                                 "catalogue rejected, the running pod is unchanged:")
        except ParseFailed as error:
            if self.draining:  # the drain stopped the parse (Engine.drain)
                return self._ignored()
            self.ctx.emit("reload_failed", reason=error.reason, error=str(error), level="error")
            return self._refused([str(error)], "reload failed, the running pod is unchanged:")
        if self.draining:  # began while the catalogue was parsed
            return self._ignored()
        self.reload_errors = ()
        # Transient services are not the catalogue's: a reload keeps them, unless the catalogue
        # now names one, whose name the catalogue's service takes.
        old = {name: service.spec for name, service in self.services.items()
               if not service.spec.transient}
        fresh = {spec.name: spec for spec in new.services}
        removed = [name for name in old if name not in fresh]
        added = [spec for spec in new.services if spec.name not in old]
        changed = [spec for spec in new.services if spec.name in old and spec != old[spec.name]]
        displaced = [self.services[s.name] for s in added if s.name in self.services]
        self.catalogue = new
        await asyncio.gather(*(self.services[name].stop() for name in removed),
                             *(service.stop() for service in displaced))
        for name in removed:
            del self.services[name]
        for service in displaced:
            self._remove_transient(service, "replaced by the catalogue's")
        for spec in changed:
            if self.draining:  # began while this reload waited for a stop
                self.services[spec.name].adopt_spec(spec)
                continue
            stopping = self.services[spec.name].reconfigure(spec)
            if stopping is not None:
                await stopping
        for spec in added:
            self.services[spec.name] = self._new_service(spec)
        for spec in added:
            if spec.autostart and not self.draining:
                self._autostart(self.services[spec.name])
        messages = [f"added {s.name}" for s in added] + [f"removed {n}" for n in removed]
        messages += [f"changed {s.name} (restarted)" for s in changed]
        messages += [f"transient {s.name} stopped: the catalogue's took its name"
                     for s in displaced]
        self.ctx.emit("reloaded", added=[s.name for s in added], removed=removed,
                      changed=[s.name for s in changed])
        return True, messages or ["no change"]

    def _ignored(self) -> tuple[bool, list[str]]:
        self.ctx.emit("reload_ignored", reason="draining", level="warning")
        return False, ["the pod is draining; the catalogue was not re-read"]

    def _refused(self, problems: list[str], headline: str) -> tuple[bool, list[str]]:
        """The catalogue stays as it runs; the problems are shown (status) and counted."""
        self.reload_errors = tuple(problems)
        if self.ctx.metrics is not None:
            self.ctx.metrics.count_reload_failure()
        return False, [headline, *problems]

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
