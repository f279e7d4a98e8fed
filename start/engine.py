"""Boot and run: adopt what start.early spawned, spawn the rest of the catalogue, serve
health, drain on SIGTERM.

Order matters for boot time: `.coditect` is prepared and the first children are spawned before
this module is even imported (`start.early`); aiohttp, the health service and structlog come
once the services' start-up burst is over, or half a second after the spawns
(`healthz.libraries`). What the pod does not need to become ready (prometheus-client, the
catalogue watcher, writing the catalogue cache, a warm boot's second parse) waits until the
boot is over (`_boot_over`): the services' own start-up is a burst of CPU, and every
millisecond of ours in it is one theirs waits for. Signal handlers only record what arrived;
the loop acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from healthz import libraries
from healthz.libraries import any_runnable, defer_import
from healthz.metrics_deferred import DeferredMetrics
from start.catalogue import Catalogue, load_catalogue
from start.catalogue_cache import files_unchanged
from start.cli import Settings, report_invalid
from start.early import kept_signals, kill_unadopted
from start.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, ConfigError
from start.events import EventLog
from start.fdlimit import raise_own_limit
from start.logs import Console
from start.pod import Pod
from start.reaper import Reaper, become_subreaper
from start.service import EngineContext
from start.watch import CatalogueWatcher

if TYPE_CHECKING:
    from healthz.metrics import PodMetrics
    from healthz.metrics_deferred import Metrics
    from healthz.server import HealthServer
    from start.catalogue_cache import CatalogueCache
    from start.process import ChildProcess

RELEASE_MEMORY_AFTER = 10.0  # seconds after boot
# Then, for the pod's lifetime: a log flood leaves freed 64 KiB read buffers scattered over the
# heap, which glibc keeps resident until asked. An idle trim costs ~0.08 ms (0.002 % of a core
# every 5 s), and RSS is back to its floor within 5 s of a burst.
TRIM_HEAP_EVERY = 5.0  # seconds
# The boot is over when every critical service has settled (ready, or given up on), or after
# BOOT_LIMIT seconds whatever they do (Theia may take minutes; the watcher cannot wait that
# long). Then BOOT_GRACE more, so that whoever waits for the pod's ready moment (a readiness
# probe, a rollout) is answered at once rather than behind the deferred work (~30 ms of CPU).
BOOT_LIMIT = 2.0
BOOT_GRACE = 0.3
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 << 10  # bytes: glibc's initial value, kept fixed from then on


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
    loop = asyncio.get_running_loop()
    reaper = Reaper()
    subreaper = become_subreaper()
    console = Console(fmt=settings.log_format)
    console.attach(loop)
    events = EventLog(console)
    ctx = EngineContext(loop=loop, reaper=reaper, console=console, emit=events,
                        logs_dir=settings.home / "logs", base_env=environ, prespawned=spawned)

    def keep(valid: Catalogue) -> None:
        """What the next boot starts from."""
        if cache is not None and (why := cache.store(valid)) is not None:
            events("catalogue_cache_not_written", reason=why, level="warning")

    def reload_catalogue() -> Catalogue:
        fresh = load_catalogue(settings.catalogue, overlay=settings.overlay,
                               environ=dict(os.environ))
        keep(fresh)
        return fresh

    pod = Pod(catalogue, ctx, loader=reload_catalogue)
    stop_requested = asyncio.Event()
    background: set[asyncio.Task[object]] = set()

    def on_stop_signal(signum: int) -> None:
        if pod.draining:
            events("signal_ignored", signal=signal.Signals(signum).name,
                   note="already draining; the deadline still applies")
            return
        pod.draining = True  # /readyz answers 503 from this instant
        events("signal", signal=signal.Signals(signum).name)
        stop_requested.set()

    def on_hangup() -> None:
        task: asyncio.Task[object] = loop.create_task(pod.reload())
        background.add(task)
        task.add_done_callback(finished)

    def finished(task: asyncio.Task[object]) -> None:
        background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            events("internal_error", error=f"{type(error).__name__}: {error}", level="error")

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)

    pod.boot()
    # Only now: the boot has registered every child it adopted, so the first sweep of the
    # reaper hands a child that already exited to its service, not to the orphan count.
    reaper.install(loop)
    for name in spawned:  # not adopted: the boot no longer wanted it
        events("internal_error", error=f"{name} was spawned early but not adopted; killed",
               level="error")
    kill_unadopted(spawned)
    for early in kept_signals():  # arrived before our handlers were in place
        if early == signal.SIGHUP:
            on_hangup()
        else:
            on_stop_signal(early)
    events("booted", pid=os.getpid(), services=len(catalogue.services),
           subreaper=subreaper, catalogue=str(settings.catalogue), cached_catalogue=warm)
    deferred = defer_import(busy=lambda: any_runnable(
        s.proc.pid for s in pod.services.values() if s.proc is not None))
    health_import = loop.create_task(deferred.run())
    background.add(health_import)
    health_import.add_done_callback(background.discard)

    metrics = DeferredMetrics(functools.partial(_pod_metrics, pod))
    ctx.metrics = metrics
    console.on_drop = metrics.count_dropped_log_lines
    # aiohttp and healthz.server are imported once the services' start-up burst is over, or
    # half a second after the spawns (healthz.libraries); structlog with them. Events until
    # then are held, each with its own time, and written in order once it is configured.
    try:
        await libraries.ready()
    finally:
        events.configure()
    events("health_libraries_imported", cause=deferred.cause,
           waited_ms=round(deferred.waited * 1000), took_ms=round(deferred.took * 1000))
    server = await _start_health(pod, metrics, settings, events)
    watched = [settings.catalogue if settings.catalogue.is_dir() else settings.catalogue.parent]
    if settings.overlay is not None:
        watched.append(settings.overlay.parent)
    watcher = CatalogueWatcher(loop, watched, on_hangup)
    confirmed = True
    if server is not None and await _boot_over(pod, stop_requested):
        watcher.start()
        events("watching_catalogue", directories=[str(d) for d in watcher.directories])
        # After the watcher starts, so that a change made since the boot read the files is
        # seen by this parse or check or by the watcher, never by neither.
        if warm:
            confirmed = await _confirm_cached(pod, reload_catalogue, events)
        elif files_unchanged(pod.catalogue):
            keep(pod.catalogue)  # its files' stats were taken before they were read
        else:  # edited between the parse and the watcher's start: a reload keeps the new one
            events("catalogue_changed_during_boot")
            on_hangup()
        metrics.build()
    # Later, not now: the children are still booting and need the CPU more than we need RSS.
    loop.call_later(RELEASE_MEMORY_AFTER, _release_boot_memory, loop)
    exit_code = EXIT_OK
    if not confirmed:
        if cache is not None:
            cache.discard()
        exit_code = EXIT_CONFIG
        pod.draining = True
    elif server is None:
        exit_code = EXIT_RUNTIME
        pod.draining = True
    else:
        await stop_requested.wait()
    watcher.stop()
    in_time = await pod.drain(settings.drain_timeout)
    if server is not None:
        await server.stop()
    if not in_time and exit_code == EXIT_OK:
        exit_code = EXIT_RUNTIME
    events("exit", code=exit_code, orphans_reaped=reaper.orphans_reaped)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(signum)
    reaper.uninstall()
    console.detach()
    return exit_code


async def _confirm_cached(pod: Pod, loader: Callable[[], Catalogue], events: EventLog) -> bool:
    """Parse the catalogue a warm boot took from the cache.

    Files edited since the cache was read are an edit on disk like any other: a reload, which
    rejects an invalid catalogue and keeps the running one (a cold boot's watcher would have
    done the same). Unchanged files that parse differently (what the key cannot see) are
    applied as they parse now; unchanged files that no longer parse are False: the pod drains
    and exits 78, as a cold boot would have without starting anything."""
    if not files_unchanged(pod.catalogue):
        events("catalogue_changed_during_boot")
        await pod.reload()
        return True
    try:
        fresh = loader()
    except ConfigError as error:
        events("catalogue_invalid", problems=error.problems, level="error")
        report_invalid(error.problems, "stopping what the cached catalogue started")
        return False
    if fresh.services != pod.catalogue.services:
        events("catalogue_cache_stale", level="warning")
        await pod.apply(fresh)
    return True


async def _boot_over(pod: Pod, stop_requested: asyncio.Event) -> bool:
    """Wait until the boot is over (see BOOT_LIMIT and BOOT_GRACE); False when a stop signal
    came first, and the deferred work is not worth doing any more."""
    critical = [s.settled.wait() for s in pod.services.values()
                if s.spec.health.critical and s.want_running]
    settled: asyncio.Future[object] = asyncio.ensure_future(asyncio.gather(*critical))
    stopping: asyncio.Future[object] = asyncio.ensure_future(stop_requested.wait())
    try:
        await asyncio.wait({settled, stopping}, timeout=BOOT_LIMIT,
                           return_when=asyncio.FIRST_COMPLETED)
        if not stop_requested.is_set():
            await asyncio.wait({stopping}, timeout=BOOT_GRACE)
    finally:
        settled.cancel()
        stopping.cancel()
    return not stop_requested.is_set()


def _pod_metrics(pod: Pod) -> PodMetrics:
    from healthz.metrics import PodMetrics

    return PodMetrics(pod)


async def _start_health(pod: Pod, metrics: Metrics, settings: Settings,
                        events: EventLog) -> HealthServer | None:
    from healthz.server import HealthServer  # imported by then: _run waited for libraries

    # Before the listener sizes its connection cap from it; the first spawns are done, and
    # later ones give their child the pod's own limit back (start.fdlimit).
    raise_own_limit()
    server = HealthServer(pod, metrics, tcp_addr=settings.health_addr,
                          unix_path=settings.run_dir / "podctl.sock")
    try:
        await server.start()
    except (OSError, ValueError) as error:
        events("health_listener_failed", addr=settings.health_addr, error=str(error),
               level="error")
        # Also the one plain line a person reads first, as for every other refusal to run.
        # The unix socket is bound after the TCP port: name the one that failed.
        from start.mounts import run_dir_problem

        why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        problem = run_dir_problem(settings.run_dir)
        sys.stderr.write(f"coditect-start: {problem}\n" if problem else
                         f"coditect-start: cannot serve health on {settings.health_addr}: "
                         f"{why}; free it or set --health-addr / CODITECT_HEALTH_ADDR\n")
        return None
    events("health_listening", addr=settings.health_addr,
           socket=str(settings.run_dir / "podctl.sock"))
    return server


def _release_boot_memory(loop: asyncio.AbstractEventLoop) -> None:
    """Parsing and importing leave freed heap behind; give it back to the kernel so the idle
    pod's RSS is what it uses, not what boot once needed (glibc only; elsewhere a no-op)."""
    import ctypes
    import gc

    gc.collect()
    gc.freeze()  # what boot built lives for the pod's lifetime: keep later GC passes short
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
        # A fixed mmap threshold turns off glibc's sliding one, which a log flood raises and
        # which then keeps every later burst's buffers on the heap: the soak measured +2 MiB
        # after each flood without it, flat with it (docs/SOAK.md). For this process only.
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        return  # not glibc: nothing to trim, now or later
    loop.call_later(TRIM_HEAP_EVERY, _trim_heap, loop, libc.malloc_trim)


def _trim_heap(loop: asyncio.AbstractEventLoop, malloc_trim: Callable[[int], int]) -> None:
    malloc_trim(0)
    loop.call_later(TRIM_HEAP_EVERY, _trim_heap, loop, malloc_trim)
