"""Boot and run: adopt what start.early spawned, spawn the rest of the catalogue, serve
health, drain on SIGTERM.

What is put off for boot speed, and when it is done, is `start.boot`'s: this module only calls
into it in order. Signal handlers only record what arrived; the loop acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from healthz.eventfeed import EventFeed
from start.boot import Boot
from start.catalogue import Catalogue
from start.childenv import forget_secrets
from start.early import kill_unadopted
from start.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME
from start.events import EventLog
from start.fdlimit import raise_own_limit
from start.logs import Console
from start.mounts import run_dir_problem
from start.notify import SOCKET_NAME, NotifySocket
from start.oomkill import pod_counter
from start.pod import Pod
from start.podcheck import CatalogueChecker
from start.reaper import Reaper, become_subreaper
from start.reparse import IsolatedParser
from start.service import EngineContext, Service
from start.settings import Settings
from start.stopsignals import kept_signals
from start.termination import after_drain, cause_at_signal, out_of_memory
from start.termination import write as write_termination_message
from start.watch import CatalogueWatcher, Targets, targets_of

if TYPE_CHECKING:
    from healthz.server import HealthServer
    from start.catalogue.cache import CatalogueCache
    from start.process import ChildProcess


def boot_and_run(settings: Settings, catalogue: Catalogue, environ: dict[str, str], *,
                 cache: CatalogueCache | None = None, warm: bool = False,
                 spawned: dict[str, ChildProcess] | None = None) -> int:
    """`warm`: `catalogue` came from `cache`, unchecked until the children are spawned.
    `spawned`: services already spawned (start.early), adopted by the boot; `.coditect` and the
    run directory are ready (start.early.prepare_directories)."""
    try:
        return asyncio.run(_run(settings, catalogue, environ, cache, warm, spawned or {}))
    finally:
        # The console made stdout non-blocking; on any way out, give the terminal back as it was.
        with contextlib.suppress(OSError):
            os.set_blocking(1, True)


async def _run(settings: Settings, catalogue: Catalogue, environ: dict[str, str],
               cache: CatalogueCache | None, warm: bool,
               spawned: dict[str, ChildProcess]) -> int:
    engine = Engine(asyncio.get_running_loop(), settings, catalogue, environ, cache, warm,
                    spawned)
    return await engine.run()


FEED_FLUSH_TIMEOUT = 0.2  # seconds the drain waits for event followers to be handed the notice


class Engine:
    """One pod's life in PID 1: spawn, serve, wait for a stop, drain."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: Settings,
                 catalogue: Catalogue, environ: dict[str, str], cache: CatalogueCache | None,
                 warm: bool, spawned: dict[str, ChildProcess]) -> None:
        self.loop = loop
        self.settings = settings
        self.spawned = spawned
        self.reaper = Reaper()
        self.subreaper = become_subreaper()
        self.console = Console(fmt=settings.log_format)
        self.console.attach(loop)
        self.events = EventLog(self.console)
        self.feed = EventFeed()  # the control socket's followers (`podctl events -f`)
        self.events.feed = self.feed
        self.ctx = EngineContext(loop=loop, reaper=self.reaper, console=self.console,
                                 emit=self.events, logs_dir=settings.home / "logs",
                                 base_env=environ, prespawned=spawned)
        # PID 1's own parsers get the environment it was started with, secrets included (its
        # os.environ holds none: start.childenv): they must parse as the boot did.
        self.parser = IsolatedParser(self.reaper, settings.reload_limits, env=environ)
        self.checker = CatalogueChecker(settings, self.reaper, env=environ)
        self.pod = Pod(catalogue, self.ctx, loader=self.reload_catalogue,
                       checker=self.checker.check)
        self.notify = NotifySocket(loop, settings.run_dir / SOCKET_NAME, self.pod.on_notify,
                                   self.events, time.monotonic)
        self.boot = Boot(loop, self.pod, self.events, cache, warm)
        self.ctx.metrics = self.boot.metrics
        self.console.on_drop = self.boot.metrics.count_dropped_log_lines
        # The heap is trimmed after work: a supervisor event, or a flood of children's output.
        self.events.on_event = self.boot.heap.after_work
        self.console.on_output = self.boot.heap.after_output
        self.watcher: CatalogueWatcher | None = None  # started once the boot is over
        self.stop_requested = asyncio.Event()
        self.background: set[asyncio.Task[object]] = set()
        # Why the pod ends (start.termination): a failure of the engine's own, or the state
        # of the services when the first stop signal came.
        self.failure: str | None = None
        self.stop_cause: str | None = None
        self.policy_exit: int | None = None  # on_fatal=exit: the code the pod ends with
        self.ctx.on_unhealable = self.on_unhealable
        self.ctx.oom = pod_counter()

    async def run(self) -> int:
        self.install_signal_handlers()
        self.spawn()
        server, exit_code = await self.serve()
        if exit_code == EXIT_OK:
            await self.stop_requested.wait()
        else:
            self.pod.draining = True
        return await self.drain(server, exit_code)

    async def reload_catalogue(self) -> Catalogue:
        """The catalogue parsed again, in a child under limits (start.reparse): the loop goes on
        answering meanwhile."""
        fresh = await self.parser.parse(self.settings.catalogue, self.settings.overlay)
        forget_secrets(fresh.secret_names)
        self.boot.keep(fresh)
        if self.watcher is not None:
            self.watcher.follow(self.watched(fresh))  # its includes may match other files now
        return fresh

    def watched(self, valid: Catalogue) -> Targets:
        """The catalogue's own files: what the watcher wakes for (start.watch)."""
        return targets_of(valid, self.settings.catalogue, self.settings.overlay)

    # -- signals ----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self.on_stop_signal, signum)
        self.loop.add_signal_handler(signal.SIGHUP, self.on_hangup)

    def on_stop_signal(self, signum: int) -> None:
        if self.pod.draining:
            self.events("signal_ignored", signal=signal.Signals(signum).name,
                        note="already draining; the deadline still applies")
            return
        self.pod.draining = True  # /readyz answers 503 from this instant
        # Before the drain stops anything: a budget used up or a fatal service is why the
        # kubelet sent it.
        self.stop_cause = cause_at_signal(self.pod.snapshot().services)
        self.events("signal", signal=signal.Signals(signum).name)
        self.stop_requested.set()

    def on_unhealable(self, service: Service, cause: str) -> None:
        """A service with on_fatal=exit can no longer be healed: drain, and exit with its
        code; the cause is the termination message."""
        if self.pod.draining:
            return
        self.pod.draining = True
        code = service.spec.health.exit_code
        self.stop_cause = out_of_memory(f"{cause} (on_fatal=exit)", service.last_exit)
        self.policy_exit = code
        self.events("giving_up", service=service.name, cause=cause, exit_code=code,
                    level="error")
        self.stop_requested.set()

    def on_hangup(self) -> None:
        task: asyncio.Task[object] = self.loop.create_task(self.pod.reload())
        self.background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            self.events("internal_error", error=f"{type(error).__name__}: {error}",
                        level="error")

    # -- boot -------------------------------------------------------------------------------

    def spawn(self) -> None:
        """Adopt what was spawned early, spawn the rest, then act on the signals kept meanwhile."""
        if self.notify.open():  # before the first service that is told of it
            self.ctx.notify = self.notify
        self.pod.boot()
        # Only now: the boot has registered every child it adopted, so the first sweep of the
        # reaper hands a child that already exited to its service, not to the orphan count.
        self.reaper.install(self.loop)
        for name in self.spawned:  # not adopted: the boot no longer wanted it
            self.events("internal_error", error=f"{name} was spawned early but not adopted; "
                        "killed", level="error")
        kill_unadopted(self.spawned)
        for early in kept_signals():  # arrived before our handlers were in place
            if early == signal.SIGHUP:
                self.on_hangup()
            else:
                self.on_stop_signal(early)
        self.events("booted", pid=os.getpid(), services=len(self.pod.catalogue.services),
                    subreaper=self.subreaper, catalogue=str(self.settings.catalogue),
                    cached_catalogue=self.boot.warm)

    async def serve(self) -> tuple[HealthServer | None, int]:
        """The health service up and the boot's deferred work done: the server (None when it
        could not listen) and the exit code so far (EXIT_OK: wait for a stop signal)."""
        await self.boot.import_libraries()
        server = await self.start_health()
        if server is None:
            return None, EXIT_RUNTIME
        confirmed = True
        if await self.boot.wait_boot_over(self.stop_requested):
            self.watcher = CatalogueWatcher(self.loop, self.on_hangup)
            self.watcher.follow(self.watched(self.pod.catalogue))
            confirmed = await self.boot.after_boot(self.watcher, self.reload_catalogue,
                                                   self.on_hangup)
        self.boot.release_memory_later()
        if not confirmed:
            self.failure = "catalogue invalid (its files changed since the cached copy)"
        return server, EXIT_OK if confirmed else EXIT_CONFIG

    async def start_health(self) -> HealthServer | None:
        from healthz.server import HealthServer  # imported by then: serve waited for it

        settings = self.settings
        # Before the listener sizes its connection cap from it; the first spawns are done, and
        # later ones give their child the pod's own limit back (start.fdlimit).
        raise_own_limit()
        server = HealthServer(self.pod, self.boot.metrics, tcp_addr=settings.health_addr,
                              unix_path=settings.run_dir / "podctl.sock", feed=self.feed)
        try:
            await server.start()
        except (OSError, ValueError) as error:
            self.events("health_listener_failed", addr=settings.health_addr, error=str(error),
                        level="error")
            # Also the one plain line a person reads first, as for every other refusal to run.
            # The unix socket is bound after the TCP port: name the one that failed.
            why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            self.failure = f"cannot serve health on {settings.health_addr}: {why}"
            problem = run_dir_problem(settings.run_dir)
            sys.stderr.write(f"coditect-start: {problem}\n" if problem else
                             f"coditect-start: cannot serve health on {settings.health_addr}: "
                             f"{why}; free it or set --health-addr / CODITECT_HEALTH_ADDR\n")
            return None
        self.events("health_listening", addr=settings.health_addr,
                    socket=str(settings.run_dir / "podctl.sock"))
        return server

    # -- the end ----------------------------------------------------------------------------

    async def drain(self, server: HealthServer | None, exit_code: int) -> int:
        # Those following the events get the notice (`signal`) before anything is stopped.
        await self.feed.flush(FEED_FLUSH_TIMEOUT)
        if self.watcher is not None:
            self.watcher.stop()
        self.parser.kill()  # a reload's parse: its answer would be ignored now
        in_time = await self.pod.drain(self.settings.drain_timeout)
        self.notify.close()
        if server is not None:
            await server.stop()
        if not in_time and exit_code == EXIT_OK:
            exit_code = EXIT_RUNTIME
        if self.policy_exit is not None and self.failure is None:
            exit_code = self.policy_exit  # why the pod ended matters more than how the drain went
        killed = [s.name for s in self.pod.services.values() if s.killed_at_deadline]
        reason = self.failure or after_drain(self.stop_cause, killed)
        if self.settings.termination_log is not None:
            problem = write_termination_message(self.settings.termination_log, reason)
            if problem is not None:
                self.events("termination_log_failed", error=problem, level="warning")
        self.events("exit", code=exit_code, reason=reason,
                    orphans_reaped=self.reaper.orphans_reaped)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.loop.remove_signal_handler(signum)
        self.reaper.uninstall()
        self.console.detach()
        return exit_code
