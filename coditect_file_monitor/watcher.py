"""watchdog's events, turned into `Change`s for the coalescer; the observers that produce them.

Mapping: created → created; modified and attribute change (chmod, touch) → modified;
deleted → deleted; moved → moved, or created/deleted when one side is ignored or outside ROOT.
Directory "modified" events (a child changed) are noise and dropped. For a directory moved
inside ROOT, inotify also synthesises one move per descendant; the directory's move says it
all, so those are dropped, while synthesised creations (a tree moved in from outside, `mkdir
-p a/b && touch a/b/f` racing the watch) are kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    # FileClosedEvent (IN_CLOSE_WRITE) is left out: every write already raised IN_MODIFY, and
    # the coalescing window stands in for "the writer is done"; it would be a third of a storm.
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserverVFS

from coditect_file_monitor.diag import say
from coditect_file_monitor.events import Change, Kind
from coditect_file_monitor.paths import PathRules

# Also the inotify mask: opens, reads and close-without-write (our own hashing) never reach us.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    # FileClosedEvent (IN_CLOSE_WRITE) is left out: every write already raised IN_MODIFY, and
    # the coalescing window stands in for "the writer is done"; it would be a third of a storm.
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
]

_KINDS = {
    "created": Kind.CREATED,
    "modified": Kind.MODIFIED,
    "attrib": Kind.MODIFIED,
    "deleted": Kind.DELETED,
    "moved": Kind.MOVED,
}


class ChangeHandler(FileSystemEventHandler):
    """Runs on watchdog's dispatcher thread: cheap, and never raises."""

    def __init__(
        self,
        rules: PathRules,
        offer: Callable[[Change], bool],
        *,
        on_dropped: Callable[[Change], None],
        on_root_lost: Callable[[], None],
        log: logging.Logger,
    ) -> None:
        super().__init__()
        self._rules = rules
        self._offer = offer
        self._on_dropped = on_dropped
        self._on_root_lost = on_root_lost
        self._log = log

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            change = self.translate(event)
            if change is not None and not self._offer(change):
                self._on_dropped(change)
        except Exception:
            self._log.exception("cannot handle a watchdog event", extra={"fields": {}})

    def translate(self, event: FileSystemEvent) -> Change | None:
        kind = _KINDS.get(event.event_type)
        if kind is None or (event.is_directory and kind is Kind.MODIFIED):
            return None
        src = os.fsdecode(event.src_path)
        now = time.time()
        if kind is Kind.MOVED:
            assert isinstance(event, FileSystemMovedEvent)
            return self._move(src, os.fsdecode(event.dest_path), event, now)
        if kind is Kind.DELETED and event.is_directory and src == self._rules.root:
            self._on_root_lost()
            return None
        rel = self._rules.relative(src)
        if rel is None:
            return None
        return Change(kind, rel, event.is_directory, now)

    def _move(self, src: str, dest: str, event: FileSystemEvent, now: float) -> Change | None:
        rel_src = self._rules.relative(src) if src else None
        rel_dest = self._rules.relative(dest) if dest else None
        if rel_src is None and rel_dest is None:
            return None
        if rel_src is None:
            assert rel_dest is not None
            return Change(Kind.CREATED, rel_dest, event.is_directory, now)
        if rel_dest is None:
            return Change(Kind.DELETED, rel_src, event.is_directory, now)
        if event.is_synthetic:
            return None
        return Change(Kind.MOVED, rel_src, event.is_directory, now, dest=rel_dest)


def start_observer(
    root: str,
    handler: ChangeHandler,
    *,
    recursive: bool,
    poll_interval: float | None,
    fallback_interval: float,
    log: logging.Logger,
) -> tuple[BaseObserver, str]:
    """Start watching; returns the observer and its name (`inotify` or `polling`).

    When the watches are in place this has returned: the caller may say "watching". If inotify
    cannot be had (watch or instance limit, no inotify), polling takes over with a warning.
    """
    if poll_interval is None:
        observer: BaseObserver | None = None
        try:
            observer = InotifyObserver()
            observer.schedule(handler, root, recursive=recursive, event_filter=WATCHED_EVENTS)
            observer.start()
            return observer, "inotify"
        except OSError as exc:
            say(log, logging.WARNING, "inotify unavailable, polling instead",
                error=str(exc), poll_interval=fallback_interval)
            _stop_quietly(observer)
            if not os.path.isdir(root):
                raise
            poll_interval = fallback_interval
    # lstat: symlinks are entries, never followed, so a link loop cannot send the walk round.
    observer = PollingObserverVFS(os.lstat, os.scandir, polling_interval=poll_interval)
    observer.schedule(handler, root, recursive=recursive, event_filter=WATCHED_EVENTS)
    observer.start()
    return observer, "polling"


def stop_observer(observer: BaseObserver, timeout: float = 5.0) -> None:
    _stop_quietly(observer)
    if observer.is_alive():
        observer.join(timeout)


def _stop_quietly(observer: BaseObserver | None) -> None:
    if observer is None:
        return
    # A half-started observer may fail to stop; it is dropped either way.
    with contextlib.suppress(Exception):
        observer.stop()
