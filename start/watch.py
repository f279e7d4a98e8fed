"""Catalogue changes on disk become one reload: watchdog sees them and a debounce folds an
editor's burst (write a temp file and rename it, or several writes) into one. A reload that
changes nothing restarts nothing, so a spurious wake-up is harmless, but it still costs a
parse: only the catalogue's own files (the main file, what its `[include]` patterns match or
could match, the overlay) wake the watcher, never their neighbours. The overlay often sits in
a directory that also holds the home or run directory, where logs are written all the time.

Each watched directory is watched on its own (not recursively). A file reached through
symlinks (a Kubernetes ConfigMap volume: `conf.d/x.conf -> ..data/x.conf`, `..data -> ..2026_…`,
updated by renaming a new `..data` over the old) is watched at every link on the way, so the
rename that swaps `..data` counts as a change of the file.
"""

from __future__ import annotations

import asyncio
import fnmatch
import glob
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from start.catalogue import Catalogue

DEBOUNCE = 0.5  # seconds of quiet after the last change before reloading
MAX_LINKS = 40  # symlinks followed per file, as the kernel's ELOOP limit


@dataclass(frozen=True)
class Targets:
    """What counts as the catalogue: exact paths, and `[include]` patterns (absolute)."""

    files: frozenset[str] = field(default_factory=frozenset)
    patterns: tuple[str, ...] = ()

    def directories(self) -> list[str]:
        """The directories to watch: each file's, and each pattern's fixed part."""
        found = {os.path.dirname(path) for path in self.files}
        for pattern in self.patterns:
            found.add(_fixed_directory(pattern))
        return sorted(d for d in found if os.path.isdir(d))

    def covers(self, path: str) -> bool:
        """Whether a change at `path` is a change of the catalogue."""
        path = os.path.normpath(path)
        return path in self.files or any(_glob_matches(p, path) for p in self.patterns)


def targets_of(catalogue: Catalogue | None, location: Path, overlay: Path | None) -> Targets:
    """The files of `catalogue` (as its parse recorded them) plus the main file and the
    overlay, even when missing: creating one of those is a change too."""
    main = location / "supervisord.conf" if location.is_dir() else location
    paths: set[str] = {os.path.abspath(main)}
    if overlay is not None:
        paths.add(os.path.abspath(overlay))
    patterns: list[str] = []
    provenance = catalogue.provenance if catalogue is not None else None
    if provenance is not None:
        paths.update(os.path.abspath(path) for path, _ in provenance.stamps)
        patterns.extend(os.path.abspath(pattern) for pattern, _ in provenance.globs)
    files: set[str] = set()
    for path in paths:
        files.update(link_chain(path))
    return Targets(frozenset(files), tuple(sorted(set(patterns))))


def link_chain(path: str) -> list[str]:
    """`path`, and every symlink (the file's own, or its directory's) met on the way to the
    real file, each as a normalised absolute path."""
    chain = [os.path.normpath(path)]
    current = chain[0]
    for _ in range(MAX_LINKS):
        directory, name = os.path.split(current)
        if os.path.islink(current):
            current = os.path.normpath(os.path.join(directory, os.readlink(current)))
        elif os.path.islink(directory):
            chain.append(directory)
            target = os.path.join(os.path.dirname(directory), os.readlink(directory))
            current = os.path.normpath(os.path.join(target, name))
        else:
            break
        chain.append(current)
    return list(dict.fromkeys(chain))


def _fixed_directory(pattern: str) -> str:
    """The longest directory of `pattern` with no wildcard in it."""
    directory = os.path.dirname(pattern)
    while glob.has_magic(directory):
        directory = os.path.dirname(directory)
    return directory


def _glob_matches(pattern: str, path: str) -> bool:
    """`glob`'s meaning of a pattern: a wildcard never crosses a `/`."""
    wanted = pattern.split(os.sep)
    parts = path.split(os.sep)
    return len(wanted) == len(parts) and all(
        fnmatch.fnmatchcase(part, want) for part, want in zip(parts, wanted, strict=True))


class CatalogueWatcher:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None],
                 debounce: float = DEBOUNCE) -> None:
        self.loop = loop
        self.on_change = on_change
        self.debounce = debounce
        self.targets = Targets()
        self._timer: asyncio.TimerHandle | None = None
        self._observer: Any = None
        self._watches: dict[str, Any] = {}
        self._handler: Any = None

    @property
    def directories(self) -> list[str]:
        return sorted(self._watches)

    def start(self, targets: Targets | None = None) -> None:
        """Watch `targets`, or what `follow` was last given."""
        # Boot speed: watchdog (and its thread) only once the boot is over (start.engine).
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return  # reads (ours included) are not changes
                paths = [os.fsdecode(event.src_path), os.fsdecode(event.dest_path or b"")]
                watcher.loop.call_soon_threadsafe(watcher._event, [p for p in paths if p])

        self._handler = Handler()
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()
        self.follow(self.targets if targets is None else targets)

    def follow(self, targets: Targets) -> None:
        """Watch `targets` from now on (after a reload: its includes may have changed)."""
        self.targets = targets
        if self._observer is None:
            return
        wanted = set(targets.directories())
        for directory in set(self._watches) - wanted:
            self._observer.unschedule(self._watches.pop(directory))
        for directory in sorted(wanted - set(self._watches)):
            try:
                self._watches[directory] = self._observer.schedule(
                    self._handler, directory, recursive=False)
            except OSError:
                continue  # gone since `directories()` looked: a later reload will retry

    def _event(self, paths: Iterable[str]) -> None:
        if any(self.targets.covers(path) for path in paths):
            self._changed()

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
