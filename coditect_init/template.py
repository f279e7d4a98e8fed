"""What the home should contain: the fixed layout plus every entry of the template directory.

The template is the image's copy and is only ever read. Only regular files and directories
are seeded; a symlink or special file in the template is skipped with a warning, so a
template can never make us copy something from outside it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import EX_DATAERR, InitError, template_failed
from .settings import JsonObject, NotAnObject, parse

LAYOUT_DIRS = ("logs", "agents", "skills", "scripts", "workflows")
EVENTS_LOG = "logs/events.log"
SETTINGS = "settings.json"
DIR_MODE = 0o755
FILE_MODE = 0o644
OWNER_RW = 0o600  # a seeded file is the user's to edit, even if the image's copy is read-only
OWNER_RWX = 0o700
LOGS_DIR_MODE = 0o750  # logs/ and what is in it: the owner, and the group reading
LOG_FILE_MODE = 0o640


@dataclass(frozen=True, slots=True)
class Entry:
    """One file or directory the home should have. `source` None means an empty file."""

    rel: str
    is_dir: bool
    mode: int
    size: int = 0
    source: Path | None = None


@dataclass(frozen=True, slots=True)
class Template:
    """Entries sorted parents first; settings.json apart, because it is merged, not copied."""

    entries: tuple[Entry, ...]
    settings: JsonObject
    settings_bytes: bytes
    settings_mode: int
    warnings: tuple[str, ...]


def load(root: Path | None) -> Template:
    """Read the template's tree (names and modes, not contents) and its settings.json."""
    found: dict[str, Entry] = {}
    warnings: list[str] = []
    settings_bytes, settings_mode = b"{}\n", FILE_MODE
    if root is not None:
        _walk(root, "", found, warnings)
        top = found.pop(SETTINGS, None)
        if top is not None and not top.is_dir:
            settings_bytes, settings_mode = _read(root / SETTINGS), top.mode
    for name in LAYOUT_DIRS:
        found.setdefault(name, Entry(name, True, DIR_MODE))
    found.setdefault(EVENTS_LOG, Entry(EVENTS_LOG, False, FILE_MODE))
    # Logs are private whatever the template says: a service's output may hold anything.
    for rel, private in (("logs", LOGS_DIR_MODE), (EVENTS_LOG, LOG_FILE_MODE)):
        entry = found[rel]
        found[rel] = Entry(entry.rel, entry.is_dir, entry.mode & private, entry.size,
                           entry.source)
    try:
        settings = parse(settings_bytes)
    except NotAnObject as err:
        raise InitError(f"template {root}/{SETTINGS} is {err} — fix the image's template",
                        EX_DATAERR) from None
    entries = tuple(sorted(found.values(), key=lambda e: e.rel.split("/")))
    return Template(entries, settings, settings_bytes, settings_mode, tuple(warnings))


def _walk(directory: Path, prefix: str, found: dict[str, Entry], warnings: list[str]) -> None:
    try:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: e.name)
        for child in children:
            rel = f"{prefix}{child.name}"
            st = child.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                found[rel] = Entry(rel, True, stat.S_IMODE(st.st_mode) & 0o777 | OWNER_RWX)
                _walk(Path(child.path), f"{rel}/", found, warnings)
            elif stat.S_ISREG(st.st_mode):
                found[rel] = Entry(rel, False, stat.S_IMODE(st.st_mode) & 0o777 | OWNER_RW,
                                   st.st_size, Path(child.path))
            else:
                warnings.append(f"template entry {child.path} skipped: only regular files "
                                "and directories are seeded")
    except OSError as err:
        raise template_failed(err, directory) from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise template_failed(err, path) from None


def check_readable(entry: Entry) -> None:
    """Fail before writing anything if a file that will be copied cannot be read."""
    if entry.source is not None and not os.access(entry.source, os.R_OK):
        raise template_failed(PermissionError(13, "Permission denied"), entry.source)
