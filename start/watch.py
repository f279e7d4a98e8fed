"""Catalogue changes on disk become one reload: watchdog sees them and a debounce folds an
editor's burst (write a temp file and rename it, or several writes) into one. A reload that
changes nothing restarts nothing, so a spurious wake-up is harmless."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

DEBOUNCE = 0.5  # seconds of quiet after the last change before reloading


class CatalogueWatcher:
    def __init__(self, loop: asyncio.AbstractEventLoop, directories: Iterable[Path],
                 on_change: Callable[[], None], debounce: float = DEBOUNCE) -> None:
        self.loop = loop
        self.directories = sorted({d.resolve() for d in directories if d.is_dir()})
        self.on_change = on_change
        self.debounce = debounce
        self._timer: asyncio.TimerHandle | None = None
        self._observer: Any = None

    def start(self) -> None:
        # Boot speed: watchdog (and its thread) only once the boot is over (start.engine).
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return  # reads (ours included) are not changes
                watcher.loop.call_soon_threadsafe(watcher._changed)

        self._observer = Observer()
        for directory in self.directories:
            self._observer.schedule(Handler(), str(directory), recursive=True)
        self._observer.daemon = True
        self._observer.start()

    def _changed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.on_change()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
