"""Boot and run: prepare .coditect, spawn the catalogue, serve health, drain on SIGTERM.

Order matters for boot time: children are spawned before structlog, aiohttp and
prometheus-client are imported; the health service comes up a few milliseconds later.
Signal handlers only record what arrived; the loop acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from start.catalogue import Catalogue, load_catalogue
from start.cli import Settings
from start.errors import EXIT_OK, EXIT_RUNTIME
from start.events import EventLog
from start.execprobe import ReaperExecRunner
from start.logs import Console
from start.pod import Pod
from start.reaper import Reaper, become_subreaper
from start.service import EngineContext
from start.watch import CatalogueWatcher

if TYPE_CHECKING:
    from healthz.server import HealthServer

RELEASE_MEMORY_AFTER = 10.0  # seconds after boot


def boot_and_run(settings: Settings, catalogue: Catalogue, environ: dict[str, str]) -> int:
    from coditect_init import InitError, prepare

    try:
        prepare(settings.home, settings.template)
        logs = settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if not os.access(logs, os.W_OK | os.X_OK):
            sys.stderr.write(f"coditect-start: {logs} is not writable by uid {os.geteuid()}; "
                             "fix its owner or mode (services' logs go there)\n")
            return EXIT_RUNTIME
        settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except InitError as error:
        sys.stderr.write(f"coditect-start: {error}\n")
        return EXIT_RUNTIME
    except OSError as error:
        sys.stderr.write(f"coditect-start: cannot create {error.filename}: {error.strerror}; "
                         "check the volume and its permissions\n")
        return EXIT_RUNTIME
    try:
        return asyncio.run(_run(settings, catalogue, environ))
    finally:
        # The console made stdout non-blocking; on any way out, give the terminal back as it was.
        with contextlib.suppress(OSError):
            os.set_blocking(1, True)


async def _run(settings: Settings, catalogue: Catalogue, environ: dict[str, str]) -> int:
    loop = asyncio.get_running_loop()
    reaper = Reaper()
    reaper.install(loop)
    subreaper = become_subreaper()
    console = Console(fmt=settings.log_format)
    console.attach(loop)
    events = EventLog(console)
    ctx = EngineContext(loop=loop, reaper=reaper, console=console, emit=events,
                        logs_dir=settings.home / "logs", base_env=environ,
                        exec_runner=ReaperExecRunner(reaper))

    def reload_catalogue() -> Catalogue:
        return load_catalogue(settings.catalogue, overlay=settings.overlay,
                              environ=dict(os.environ))

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
    events("booted", pid=os.getpid(), services=len(catalogue.services),
           subreaper=subreaper, catalogue=str(settings.catalogue))
    events.configure()

    server = await _start_health(pod, ctx, console, settings, events)
    watched = [settings.catalogue if settings.catalogue.is_dir() else settings.catalogue.parent]
    if settings.overlay is not None:
        watched.append(settings.overlay.parent)
    watcher = CatalogueWatcher(loop, watched, on_hangup)
    watcher.start()
    events("watching_catalogue", directories=[str(d) for d in watcher.directories])
    # Later, not now: the children are still booting and need the CPU more than we need RSS.
    loop.call_later(RELEASE_MEMORY_AFTER, _release_boot_memory)
    exit_code = EXIT_OK
    if server is None:
        exit_code = EXIT_RUNTIME
        pod.draining = True
    else:
        await stop_requested.wait()
    watcher.stop()
    in_time = await pod.drain(settings.drain_timeout)
    if server is not None:
        await server.stop()
    events("exit", code=EXIT_OK if in_time and exit_code == EXIT_OK else EXIT_RUNTIME,
           orphans_reaped=reaper.orphans_reaped)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(signum)
    reaper.uninstall()
    console.detach()
    return exit_code if in_time else EXIT_RUNTIME


async def _start_health(pod: Pod, ctx: EngineContext, console: Console, settings: Settings,
                        events: EventLog) -> HealthServer | None:
    with _no_ca_bundle():
        import aiohttp  # noqa: F401  (imported here, under the context manager, on purpose)

    from healthz.metrics import PodMetrics
    from healthz.server import HealthServer

    metrics = PodMetrics(pod)
    ctx.metrics = metrics
    console.on_drop = metrics.count_dropped_log_lines
    server = HealthServer(pod, metrics, tcp_addr=settings.health_addr,
                          unix_path=settings.run_dir / "podctl.sock")
    try:
        await server.start()
    except (OSError, ValueError) as error:
        events("health_listener_failed", addr=settings.health_addr, error=str(error),
               level="error")
        return None
    events("health_listening", addr=settings.health_addr,
           socket=str(settings.run_dir / "podctl.sock"))
    return server


def _release_boot_memory() -> None:
    """Parsing and importing leave freed heap behind; give it back to the kernel so the idle
    pod's RSS is what it uses, not what boot once needed (glibc only; elsewhere a no-op)."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    gc.freeze()  # what boot built lives for the pod's lifetime: keep later GC passes short
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def _no_ca_bundle() -> Iterator[None]:
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
