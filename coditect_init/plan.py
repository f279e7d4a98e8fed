"""Decide, reading only, what the home needs. Nothing here writes.

Every location is looked at with lstat, parents before children. A symlink is followed only
after checking that where it leads is still inside the home; each step carries that resolved,
symlink-free path (`real`), which the writer walks again without following anything. Problems
with the home's shape are collected and raised before the first write.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from . import settings as settings_json
from .atomic import TEMP_PREFIX, Owner
from .errors import EX_DATAERR, InitError, write_failed
from .homefs import READ, aside_name, kind_of, open_dir_inside, open_regular
from .report import Action, Kind
from .template import SETTINGS, Entry, Template, check_readable

Op = Literal["dir", "new", "replace", "aside"]


@dataclass(frozen=True, slots=True)
class Step:
    """One write. `real` is relative to the home and free of symlinks."""

    op: Op
    real: str
    mode: int
    owner: Owner | None
    size: int
    source: Path | None = None
    content: bytes | None = None
    to: str = ""  # "aside": the new name, in the same directory


@dataclass(frozen=True, slots=True)
class Plan:
    home: Path
    home_missing: bool
    steps: tuple[Step, ...]
    actions: tuple[Action, ...]
    warnings: tuple[str, ...]
    leftovers: tuple[str, ...]  # temporary entries an interrupted run left, relative to home


@dataclass(frozen=True, slots=True)
class _Found:
    """What stands at a location: its real path and lstat/stat result (None: nothing)."""

    real: str
    st: os.stat_result | None
    dangling: bool = False


class _Planner:
    def __init__(self, home: Path, template: Template, owner: Owner | None,
                 now: datetime) -> None:
        self.home, self.template, self.owner, self.now = home, template, owner, now
        self.home_missing = not _exists(home)
        self.fresh = self.home_missing or _empty(home)
        self.steps: list[Step] = []
        self.actions: list[Action] = []
        self.warnings: list[str] = []
        self.problems: list[str] = []
        self.real_dirs: dict[str, str] = {"": ""}  # template dir → real dir in the home
        self.missing_dirs: set[str] = set()

    @property
    def adding(self) -> Kind:
        return "created" if self.fresh else "added"

    def run(self) -> Plan:
        if self.home_missing:
            self.actions.append(Action("created", "."))
        for entry in self.template.entries:
            self._entry(entry)
        if not self.problems:
            self._settings()
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise InitError(self.problems[0] + more, EX_DATAERR)
        return Plan(self.home, self.home_missing, tuple(self.steps), tuple(self.actions),
                    tuple(self.warnings), self._leftovers())

    def _entry(self, entry: Entry) -> None:
        parent, _, _ = entry.rel.rpartition("/")
        if parent not in self.real_dirs:
            return  # its parent is a problem already reported
        found = self._look(entry.rel, parent)
        if found is None:
            return
        if found.st is None:
            if entry.is_dir:
                self.missing_dirs.add(entry.rel)
                self.real_dirs[entry.rel] = found.real
                self._add(Step("dir", found.real, entry.mode, self.owner, 0), entry.rel + "/")
            else:
                check_readable(entry)
                self._add(Step("new", found.real, entry.mode, self.owner, entry.size,
                               source=entry.source, content=None if entry.source else b""),
                          entry.rel)
        elif entry.is_dir:
            if self._is(entry.rel, found, stat.S_ISDIR, "a directory"):
                self.real_dirs[entry.rel] = found.real
        elif found.dangling:
            self.warnings.append(f"{self.home / entry.rel} is a dangling symlink; left alone")
            self.actions.append(Action("kept", entry.rel, "dangling symlink"))
        elif _special(found.st.st_mode):
            self._aside_special(found, entry.rel)
            check_readable(entry)
            self._add(Step("new", found.real, entry.mode, self.owner, entry.size,
                           source=entry.source, content=None if entry.source else b""),
                      entry.rel)
        elif self._is(entry.rel, found, stat.S_ISREG, "a regular file"):
            self.actions.append(Action("kept", entry.rel))

    def _settings(self) -> None:
        found = self._look(SETTINGS, "")
        if found is None:
            return
        tpl = self.template
        if found.st is None:
            self._add(Step("new", found.real, tpl.settings_mode, self.owner,
                           len(tpl.settings_bytes), content=tpl.settings_bytes), SETTINGS)
            return
        if found.dangling:
            self.warnings.append(f"{self.home / SETTINGS} is a dangling symlink; left alone")
            self.actions.append(Action("kept", SETTINGS, "dangling symlink"))
            return
        if _special(found.st.st_mode):
            self._aside_special(found, SETTINGS)
            self._add(Step("new", found.real, tpl.settings_mode, self.owner,
                           len(tpl.settings_bytes), content=tpl.settings_bytes), SETTINGS)
            return
        if not self._is(SETTINGS, found, stat.S_ISREG, "a regular file"):
            return
        st = found.st
        # Replacing a file keeps its mode, and its owner when we are allowed to set it.
        mode = stat.S_IMODE(st.st_mode) & 0o777
        owner = Owner(st.st_uid, st.st_gid) if os.geteuid() == 0 else None
        data = self._read(found.real)
        try:
            if data is None:
                raise settings_json.NotAnObject(
                    f"larger than {settings_json.MAX_BYTES // (1 << 20)} MiB")
            merged = settings_json.merge(settings_json.parse(data), tpl.settings)
        except settings_json.NotAnObject as why:
            self._set_aside(found.real, str(why), mode, owner)
            return
        if not merged.added:
            self.actions.append(Action("kept", SETTINGS))
            return
        content = settings_json.render(merged.settings)
        self.steps.append(Step("replace", found.real, mode, owner, len(content),
                               content=content))
        self.actions.append(Action("merged", SETTINGS, "added " + ", ".join(merged.added)))

    def _set_aside(self, real: str, why: str, mode: int, owner: Owner | None) -> None:
        directory, _, name = real.rpartition("/")
        aside = _join(directory, aside_name(name, self.now, _names(self.home / directory)))
        # Renamed, not copied: nothing to read or write however large it is. A kill before the
        # template's copy is in place leaves no settings.json, which the next boot creates.
        self.steps.append(Step("aside", real, 0, None, 0, to=aside.rpartition("/")[2]))
        tpl = self.template
        self.steps.append(Step("new", real, mode, owner, len(tpl.settings_bytes),
                               content=tpl.settings_bytes))
        self.actions.append(Action("set aside", aside, why))
        self.actions.append(Action("created", SETTINGS, "from the template"))
        self.warnings.append(f"{self.home / SETTINGS} was {why}; it was moved to "
                             f"{self.home / aside} and the template's settings.json "
                             "put in its place")

    def _aside_special(self, found: _Found, rel: str) -> None:
        """A FIFO, socket or device where a file belongs is renamed out of the way (opening
        it could block or touch hardware); the file is then seeded as if it were missing."""
        assert found.st is not None
        directory, _, name = found.real.rpartition("/")
        aside = _join(directory, aside_name(name, self.now, _names(self.home / directory)))
        kind = kind_of(found.st.st_mode)
        self.steps.append(Step("aside", found.real, 0, None, 0, to=aside.rpartition("/")[2]))
        self.actions.append(Action("set aside", aside, f"was {kind}"))
        self.warnings.append(f"{self.home / rel} was {kind}, not a regular file; it was moved "
                             f"to {self.home / aside} and the template's copy put in its place")

    def _look(self, rel: str, parent: str) -> _Found | None:
        """What stands at `rel`, following a symlink only while it stays inside the home."""
        name = rel.rpartition("/")[2]
        real = _join(self.real_dirs[parent], name)
        if parent in self.missing_dirs:
            return _Found(real, None)
        path = self.home / real
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return _Found(real, None)
        except OSError as err:
            raise write_failed(err, path, "read") from None
        if not stat.S_ISLNK(st.st_mode):
            return _Found(real, st)
        target = os.path.realpath(path)
        inside = os.path.relpath(target, self.home)
        if inside == os.pardir or inside.startswith(os.pardir + os.sep):
            self.problems.append(f"{self.home / rel} is a symlink to {target}, outside the "
                                 "home; it was not followed — replace it with a real "
                                 "file or directory")
            return None
        real = "" if inside == os.curdir else inside
        try:
            return _Found(real, os.stat(self.home / real))
        except FileNotFoundError:
            return _Found(real, st, dangling=True)
        except OSError as err:
            self.problems.append(f"{self.home / rel} is a symlink that cannot be followed "
                                 f"({err.strerror}) — replace it with a real file or directory")
            return None

    def _is(self, rel: str, found: _Found, test: Callable[[int], bool], what: str) -> bool:
        assert found.st is not None  # only called for something that exists
        if test(found.st.st_mode):
            return True
        if found.dangling:
            is_now = "a dangling symlink"
        else:
            is_now = "a directory" if stat.S_ISDIR(found.st.st_mode) else "not " + what
        self.problems.append(f"{self.home / rel} is {is_now} but should be {what} — move it "
                             "away (it is yours; nothing was changed) and start again")
        return False

    def _add(self, step: Step, shown: str) -> None:
        self.steps.append(step)
        self.actions.append(Action(self.adding, shown))

    def _read(self, real: str) -> bytes | None:
        """The file's bytes; None when it is larger than MAX_SETTINGS_BYTES (it is set aside
        unread). Opened without following a symlink or blocking, and only if still regular."""
        path = self.home / real
        directory, _, name = real.rpartition("/")
        try:
            dir_fd = open_dir_inside(self.home, self.home / directory)
            try:
                fd = open_regular(dir_fd, name, READ)
            finally:
                os.close(dir_fd)
            with os.fdopen(fd, "rb") as f:
                data = f.read(settings_json.MAX_BYTES + 1)
        except OSError as err:
            raise write_failed(err, path, "read") from None
        return None if len(data) > settings_json.MAX_BYTES else data

    def _leftovers(self) -> tuple[str, ...]:
        found: list[str] = []
        for rel, real in self.real_dirs.items():
            if rel in self.missing_dirs or (rel == "" and self.home_missing):
                continue
            try:
                with os.scandir(self.home / real) as it:
                    found += [_join(real, e.name) for e in it if e.name.startswith(TEMP_PREFIX)]
            except OSError as err:
                raise write_failed(err, self.home / real, "read") from None
        return tuple(sorted(set(found)))


def make(home: Path, template: Template, owner: Owner | None, now: datetime) -> Plan:
    """What `home` (absolute, symlinks resolved) needs to match `template`."""
    return _Planner(home, template, owner, now).run()


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _exists(path: Path) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _special(mode: int) -> bool:
    """A FIFO, socket or device: never anything a person keeps in a file's place."""
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))


def _names(directory: Path) -> set[str]:
    try:
        with os.scandir(directory) as it:
            return {e.name for e in it}
    except OSError:
        return set()


def _empty(home: Path) -> bool:
    try:
        with os.scandir(home) as it:
            return next(it, None) is None
    except OSError as err:
        raise write_failed(err, home, "read") from None
