"""The boot-speed layer: what PID 1 puts off so that its services start sooner, and when.

A pod's boot is a burst of CPU (every service's interpreter or runtime loading at once), and
on a 2-core pod every millisecond of ours inside it is one the slowest service waits for. So
the engine does the least it can before its children are running, and this module owns what
is put off and the moment each piece is done. The timeline:

1. Before asyncio or the engine is imported (`start.early`, called by `start.cli`): stop
   signals are kept, `.coditect` is prepared, and the first wave of services is spawned; a
   warm boot (a container restart) takes that wave from the catalogue cache
   (`start.catalogue.cache`) without importing the parser.
2. The engine's loop starts and adopts what was spawned (`EngineContext.prespawned`), then
   spawns the rest. Its own events are held (`start.events.EventLog`), each with its time.
3. `import_libraries`: aiohttp and the health service are imported once none of the
   services' processes has been runnable for two looks 10 ms apart, or half a second after
   the spawns (`healthz.libraries`; web probes wait for it, bare connects do not). structlog
   comes with them: the held events are written in order, then `health_libraries_imported`.
4. `wait_boot_over`: every critical service settled (ready, or given up on), or BOOT_LIMIT
   whatever they do; then BOOT_GRACE, so whoever waits for the pod's ready moment is
   answered before the deferred work runs.
5. `after_boot`: the catalogue watcher starts; then a warm boot's catalogue is parsed again,
   in a child as a reload parses (`start.reparse`: the health port is open by now, and the
   loop must go on answering), and a difference applied as a reload (`confirm_cached`), or a
   cold boot's catalogue is written to the cache for the next boot; prometheus-client is
   imported and the metrics held since the boot (`healthz.metrics_deferred`) are replayed
   into it. A scrape that comes first builds them at once.
6. RELEASE_MEMORY_AFTER the boot: what the boot built is frozen out of the GC, the heap is
   trimmed and glibc's mmap threshold fixed (`release_boot_memory`).
7. From then on the heap is trimmed after work only (`HeapTrim`): TRIM_AFTER_WORK after a
   supervisor event (a spawn, an exit, a reload) or FLOOD_BYTES of children's output, never
   on a timer of its own; nor is the event loop's lag measured on a heartbeat, but when asked
   (`start.looplag`): an idle PID 1 wakes only for its probes, the catalogue watcher and what
   happens (bench scenario `wakeups`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from healthz import libraries
from healthz.metrics_deferred import DeferredMetrics
from start.catalogue.cache import files_unchanged
from start.errors import ConfigError, ParseFailed, report_invalid
from start.watch import CatalogueWatcher

if TYPE_CHECKING:

    from healthz.metrics import PodMetrics
    from start.catalogue import Catalogue
    from start.catalogue.cache import CatalogueCache
    from start.events import EventLog
    from start.pod import Pod

BOOT_LIMIT = 2.0  # seconds: Theia may take minutes, the watcher cannot wait that long
BOOT_GRACE = 0.3  # seconds after the boot is over, before the deferred work (~30 ms of CPU)
RELEASE_MEMORY_AFTER = 10.0  # seconds after boot: the children still need the CPU before
# A log flood leaves freed 64 KiB read buffers scattered over the heap, which glibc keeps
# resident until asked; so do a reload's parse and a burst of restarts. A trim costs ~0.08 ms.
TRIM_AFTER_WORK = 2.0  # seconds after the first work since the last trim
FLOOD_BYTES = 1 << 20  # children's output since the last trim that counts as work
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 << 10  # bytes: glibc's initial value, kept fixed from then on


class HeapTrim:
    """`malloc_trim` once TRIM_AFTER_WORK has passed since work was noted; at most one timer
    armed at a time, none while nothing happens. Inert until `enable` (glibc found)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float = TRIM_AFTER_WORK) -> None:
        self.loop = loop
        self.delay = delay
        self.trims = 0
        self._malloc_trim: Callable[[int], int] | None = None
        self._armed: asyncio.TimerHandle | None = None
        self._output = 0  # bytes of children's output since the last trim
        self._after_flood = False  # the last trim followed a flood

    def enable(self, malloc_trim: Callable[[int], int]) -> None:
        self._malloc_trim = malloc_trim

    @property
    def pending(self) -> bool:
        """Whether a trim is armed (never while nothing happens)."""
        return self._armed is not None

    def after_work(self) -> None:
        if self._malloc_trim is not None and self._armed is None:
            self._armed = self.loop.call_later(self.delay, self._trim)

    def after_output(self, size: int) -> None:
        """Children's output went through the log pump: work once it adds up to a flood, and
        the first output after a flood's trim (the flood's tail) too."""
        self._output += size
        if self._output >= FLOOD_BYTES or self._after_flood:
            self.after_work()

    def _trim(self) -> None:
        self._armed = None
        self._after_flood = self._output >= FLOOD_BYTES
        self._output = 0
        if self._malloc_trim is not None:
            self._malloc_trim(0)
            self.trims += 1


class Boot:
    """One boot's deferred work (see the module's timeline), for the engine to call in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pod: Pod, events: EventLog,
                 cache: CatalogueCache | None, warm: bool) -> None:
        self.loop = loop
        self.pod = pod
        self.events = events
        self.cache = cache
        self.warm = warm
        self.metrics = DeferredMetrics(functools.partial(_pod_metrics, pod))
        self.heap = HeapTrim(loop)
        self._import_task: asyncio.Task[None] | None = None

    def keep(self, valid: Catalogue) -> None:
        """What the next boot starts from (after the boot, and after every reload)."""
        if self.cache is not None and (why := self.cache.store(valid)) is not None:
            self.events("catalogue_cache_not_written", reason=why, level="warning")

    # -- 3: the health libraries and structlog ---------------------------------------------

    async def import_libraries(self) -> None:
        """Import aiohttp and the health service once the services' start-up burst is over;
        the held events are written then, whatever the import's outcome (it is raised)."""
        pod = self.pod
        deferred = libraries.defer_import(busy=lambda: libraries.any_runnable(
            s.proc.pid for s in pod.services.values() if s.proc is not None))
        self._import_task = self.loop.create_task(deferred.run())
        try:
            await libraries.ready()
        finally:
            self.events.configure()
        self.events("health_libraries_imported", cause=deferred.cause,
                    waited_ms=round(deferred.waited * 1000), took_ms=round(deferred.took * 1000))

    # -- 4 and 5: after the boot ---------------------------------------------------------------

    async def wait_boot_over(self, stop_requested: asyncio.Event) -> bool:
        """Wait until the boot is over (see BOOT_LIMIT and BOOT_GRACE); False when a stop
        signal came first, and the deferred work is not worth doing any more."""
        critical = [s.settled for s in self.pod.services.values()
                    if s.spec.health.critical and s.want_running]
        # A task, not asyncio.gather: a gather cancelled here (a SIGTERM during the boot) holds
        # a CancelledError nobody retrieves, which asyncio prints as a traceback at exit.
        settled: asyncio.Future[object] = asyncio.ensure_future(_all_set(critical))
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

    async def after_boot(self, watcher: CatalogueWatcher,
                         loader: Callable[[], Awaitable[Catalogue]],
                         on_change: Callable[[], None]) -> bool:
        """Start the watcher, confirm or cache the catalogue, build the metrics; False when a
        warm boot's cached catalogue no longer parses (the pod must drain and exit 78)."""
        watcher.start()
        self.events("watching_catalogue", directories=watcher.directories,
                    files=len(watcher.targets.files), patterns=list(watcher.targets.patterns))
        # After the watcher starts, so that a change made since the boot read the files is
        # seen by this parse or check or by the watcher, never by neither.
        confirmed = True
        if self.warm:
            confirmed = await self.confirm_cached(loader)
        elif files_unchanged(self.pod.catalogue):
            self.keep(self.pod.catalogue)  # its files' stats were taken before they were read
        else:  # edited between the parse and the watcher's start: a reload keeps the new one
            self.events("catalogue_changed_during_boot")
            on_change()
        self.metrics.build()
        return confirmed

    async def confirm_cached(self, loader: Callable[[], Awaitable[Catalogue]]) -> bool:
        """Parse the catalogue a warm boot took from the cache.

        Files edited since the cache was read are an edit on disk like any other: a reload,
        which rejects an invalid catalogue and keeps the running one (a cold boot's watcher
        would have done the same). Unchanged files that parse differently (what the key cannot
        see) are applied as they parse now; unchanged files that no longer parse are False:
        the pod drains and exits 78, as a cold boot would have without starting anything."""
        pod = self.pod
        if not files_unchanged(pod.catalogue):
            self.events("catalogue_changed_during_boot")
            await pod.reload()
            return True
        try:
            fresh = await loader()  # in a child, as a reload parses: the health port is open
        except ParseFailed as error:  # no verdict: the cached catalogue, valid once, runs on
            self.events("reload_failed", reason=error.reason, error=str(error), level="error")
            return True
        except ConfigError as error:
            self.events("catalogue_invalid", problems=error.problems, level="error")
            report_invalid(error.problems, "stopping what the cached catalogue started")
            if self.cache is not None:
                self.cache.discard()
            return False
        if fresh.services != pod.catalogue.services:
            self.events("catalogue_cache_stale", level="warning")
            await pod.apply(fresh)
        return True

    # -- 6 and 7: memory -----------------------------------------------------------------------

    def release_memory_later(self) -> None:
        # Later, not now: the children are still booting and need the CPU more than we need RSS.
        self.loop.call_later(RELEASE_MEMORY_AFTER, self.release_boot_memory)

    def release_boot_memory(self) -> None:
        """Parsing and importing leave freed heap behind; give it back to the kernel so the
        idle pod's RSS is what it uses, not what boot once needed (glibc only; elsewhere a
        no-op), and from then on trim after work."""
        # Once per pod, after the boot: ctypes (~3 ms) has no place on the boot's path.
        import ctypes
        import gc

        gc.collect()
        gc.freeze()  # what boot built lives for the pod's lifetime: keep later GC passes short
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.malloc_trim(0)
            # A fixed mmap threshold turns off glibc's sliding one, which a log flood raises
            # and which then keeps every later burst's buffers on the heap: the soak measured
            # +2 MiB after each flood without it, flat with it (docs/SOAK.md).
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        except (OSError, AttributeError):
            return  # not glibc: nothing to trim, now or later
        self.heap.enable(libc.malloc_trim)


def _pod_metrics(pod: Pod) -> PodMetrics:
    # Boot speed: prometheus-client only once the boot is over (metrics are held until then).
    from healthz.metrics import PodMetrics

    return PodMetrics(pod)


async def _all_set(events: list[asyncio.Event]) -> None:
    for event in events:
        await event.wait()
