"""The monitor: observer → coalescer → worker → sink, and the main thread that keeps ROOT watched.

Threads: watchdog's (inotify reader, emitter, dispatcher running `ChangeHandler`), one worker
(measures and writes, the only code that touches the sink), the metrics server, and the main
thread, which sleeps in `select` until a signal or a lost ROOT wakes it. Signal handlers only
record; the main thread acts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from dataclasses import dataclass

from watchdog.observers.api import BaseObserver

from coditect_file_monitor.checksum import VANISHED, Measure, sha256_of, size_of
from coditect_file_monitor.coalesce import Coalescer
from coditect_file_monitor.diag import RateLimited, say
from coditect_file_monitor.events import Change, Event, Kind
from coditect_file_monitor.metrics import Metrics
from coditect_file_monitor.paths import PathRules, own_file
from coditect_file_monitor.sink import Sink
from coditect_file_monitor.watcher import ChangeHandler, start_observer, stop_observer

BATCH = 256  # changes measured between two flushes of the sink
ROOT_RECHECK = 1.0  # seconds between looks for a missing ROOT


@dataclass(frozen=True, slots=True)
class Settings:
    root: str  # absolute, symlinks resolved
    recursive: bool = False
    checksums: bool = False
    format: str = "json"
    events_log: str | None = None
    trace_log: str | None = None
    ignore: tuple[str, ...] = ()
    poll_interval: float | None = None  # None: inotify
    fallback_poll_interval: float = 1.0
    queue_size: int = 10_000
    coalesce_window: float = 0.1


class Wakeup:
    """A self-pipe: `poke` from any thread (or a signal, via `signal.set_wakeup_fd(fd)`)
    ends the main thread's `wait`."""

    def __init__(self) -> None:
        self._r, self.fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def poke(self) -> None:
        # A full pipe means a wake-up is pending anyway.
        with contextlib.suppress(BlockingIOError):
            os.write(self.fd, b"\0")

    def wait(self, timeout: float | None) -> None:
        select.select([self._r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 512):
                pass

    def close(self) -> None:
        os.close(self._r)
        os.close(self.fd)


class Monitor:
    def __init__(self, settings: Settings, sink: Sink, log: logging.Logger) -> None:
        self.settings = settings
        self.log = log
        self.sink = sink
        self.coalescer = Coalescer(
            settings.queue_size,
            quiet=settings.coalesce_window,
            max_hold=max(2.0, 4 * settings.coalesce_window),
        )
        self.metrics = Metrics(self.coalescer)
        own = [own_file(p) for p in (settings.events_log, settings.trace_log) if p]
        self.rules = PathRules(settings.root, settings.ignore, own)
        self.handler = ChangeHandler(
            self.rules,
            self.coalescer.offer,
            on_dropped=self._dropped,
            on_root_lost=self._root_lost,
            log=log,
        )
        self.wakeup = Wakeup()
        self.stop_signal: int | None = None
        self.observer_kind = ""
        self._observer: BaseObserver | None = None
        self._root_lost_flag = False
        self._worker = threading.Thread(target=self._work, name="worker", daemon=True)
        self._limited = RateLimited(log)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Watches in place when this returns (raises OSError when they cannot be)."""
        self._watch()
        self._worker.start()

    def request_stop(self, signum: int) -> None:
        """Signal-handler safe: records, wakes the main thread."""
        self.stop_signal = signum
        self.wakeup.poke()

    def run(self) -> None:
        """Main thread: keep ROOT watched until a stop is requested."""
        while self.stop_signal is None:
            self.wakeup.wait(None if self._observer is not None else ROOT_RECHECK)
            if self.stop_signal is not None:
                break
            if self._root_lost_flag and self._observer is not None:
                self._unwatch()
                say(self.log, logging.ERROR, "ROOT disappeared; waiting for it to come back",
                    root=self.settings.root)
            if self._observer is None and os.path.isdir(self.settings.root):
                try:
                    self._watch()
                except OSError as exc:
                    self._limited("rewatch", logging.ERROR, "cannot watch ROOT yet",
                                  root=self.settings.root, error=str(exc))
                else:
                    say(self.log, logging.WARNING, "ROOT is back; watching again "
                        "(changes made while it was gone are not reported)",
                        root=self.settings.root, observer=self.observer_kind)

    def shutdown(self, join_timeout: float = 30.0) -> None:
        """Stop watching, write out everything still queued, close the sink."""
        if self._observer is not None:
            self._unwatch()
        self.coalescer.close()
        if self._worker.is_alive():
            self._worker.join(join_timeout)
        try:
            self.sink.close()
        except OSError as exc:
            say(self.log, logging.ERROR, "cannot close the events log", error=str(exc))

    def healthy(self) -> bool:
        if not self._worker.is_alive():
            return False
        observer = self._observer
        if observer is None or self._root_lost_flag:
            return True  # waiting for ROOT is a state, not a failure
        return observer.is_alive() and all(e.is_alive() for e in observer.emitters)

    def _watch(self) -> None:
        self._root_lost_flag = False
        s = self.settings
        self._observer, self.observer_kind = start_observer(
            s.root,
            self.handler,
            recursive=s.recursive,
            poll_interval=s.poll_interval,
            fallback_interval=s.fallback_poll_interval,
            log=self.log,
        )
        self.metrics.watching.set(1)
        self.metrics.observer.clear()
        self.metrics.observer.labels(self.observer_kind).set(1)

    def _unwatch(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            stop_observer(observer)
        self.metrics.watching.set(0)

    # -- called from watchdog's dispatcher thread ---------------------------------------------

    def _root_lost(self) -> None:
        self._root_lost_flag = True
        self.wakeup.poke()

    def _dropped(self, change: Change) -> None:
        self._limited("dropped", logging.WARNING, "queue full, changes dropped",
                      queue_size=self.coalescer.capacity, dropped_total=self.coalescer.dropped,
                      example=change.path)

    # -- the worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        while batch := self.coalescer.take(BATCH):
            for change in batch:
                try:
                    self._emit(change)
                except Exception:
                    self.log.exception("cannot report a change", extra={"fields": {}})
            try:
                self.sink.flush()
            except OSError as exc:
                self.metrics.write_errors.inc()
                self._limited("write", logging.ERROR, "cannot write the events log",
                              error=str(exc))

    def _emit(self, change: Change) -> None:
        s = self.settings
        event = self._event(change)
        if s.format == "json":
            line = event.to_json(checksums=s.checksums)
        else:
            line = event.to_text(checksums=s.checksums)
        try:
            self.sink.write(line)
        except OSError as exc:
            self.metrics.write_errors.inc()
            self._limited("write", logging.ERROR, "cannot write the events log, event lost",
                          error=str(exc))
            return
        self.metrics.events.labels(str(change.kind)).inc()

    def _event(self, change: Change) -> Event:
        if change.kind is Kind.DELETED or change.is_dir:
            return Event.from_change(change, size=None)
        path = change.dest if change.kind is Kind.MOVED and change.dest else change.path
        full = os.path.join(self.settings.root, path)
        if not self.settings.checksums:
            return Event.from_change(change, size=size_of(full).size)
        started = time.perf_counter()
        measure = sha256_of(full)
        self.metrics.checksum_seconds.observe(time.perf_counter() - started)
        if measure.error is not None:
            self._checksum_failed(path, measure)
        return Event.from_change(
            change, size=measure.size, sha256=measure.sha256, sha256_error=measure.error
        )

    def _checksum_failed(self, path: str, measure: Measure) -> None:
        reason = measure.error or "unknown"
        self.metrics.checksum_errors.labels(reason).inc()
        level = logging.INFO if reason == VANISHED else logging.WARNING
        self._limited(f"checksum:{reason}", level, "cannot hash a file", path=path,
                      reason=reason)
