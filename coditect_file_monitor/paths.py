"""Which paths are reported, and under which name: ROOT-relative, or not at all."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable

_GLOB = re.compile(r"[*?\[]")


def own_file(path: str) -> str:
    """Absolute, symlink-free form of a file that may not exist yet (the events log)."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


class PathRules:
    """`relative(path)` is the name an absolute path is reported under, or None when it is
    outside ROOT, is one of our own files (or a rotated copy of one: `events.log.3`), or has
    a component matching an ignore rule at any depth (`node_modules` matches
    `a/node_modules/b`; `*.swp` globs are allowed too).
    """

    def __init__(self, root: str, ignore: Iterable[str], own_files: Iterable[str]) -> None:
        self.root = root
        self._prefix = root if root.endswith("/") else root + "/"
        rules = [rule for rule in ignore if rule]
        self._names = frozenset(rule for rule in rules if not _GLOB.search(rule))
        globs = [fnmatch.translate(rule) for rule in rules if _GLOB.search(rule)]
        self._glob = re.compile("|".join(globs)) if globs else None
        self._own = tuple(own_files)

    def relative(self, path: str) -> str | None:
        if not path.startswith(self._prefix):
            return None
        for own in self._own:
            if path == own or path.startswith(own + "."):
                return None
        rel = path[len(self._prefix) :]
        parts = rel.split("/")
        if not self._names.isdisjoint(parts):
            return None
        if self._glob is not None and any(self._glob.match(part) for part in parts):
            return None
        return rel
