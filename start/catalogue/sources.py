"""The catalogue's files (main file, `[include]`, overlay) merged into one parser.

Each file is read and scanned alone (`start.catalogue.files`), then its sections are copied into
supervisor's `UnhosedConfigParser`, remembering the file and line of every section and key so
that a problem found later still names them. `%(here)s` is the directory of the file that
holds it, as in supervisord; includes do not nest, as in supervisord.
"""

from __future__ import annotations

import glob
import itertools
import os
from pathlib import Path
from typing import Any

from start.catalogue import program as program_
from start.catalogue.files import Place, Scan, read_text, scan
from start.catalogue.spec import stamp_of

MAX_INCLUDED_FILES = 1000


class Sources:
    """The catalogue's files merged into one supervisor parser, with where each section and
    key is written, and the problems and notes found so far."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.environ = environ
        self.parser: Any = program_.new_parser()
        self.parser.expansions = {f"ENV_{k}": v for k, v in environ.items()}
        self.problems: list[tuple[Place, str]] = []
        self.notes: list[tuple[Place, str]] = []
        self.file_order: dict[str, int] = {}
        self.files: list[str] = []
        self.stamps: list[tuple[str, tuple[int, ...]]] = []  # each file's stat, before reading
        self.globs: list[tuple[str, tuple[str, ...]]] = []  # [include] patterns, their matches
        self.places: dict[tuple[str, str | None], Place] = {}
        self.cut: set[tuple[str, str]] = set()  # values cut by a comment, already reported
        self.here = "."

    def problem(self, place: Place, message: str) -> None:
        self.problems.append((place, message))

    def note(self, place: Place, message: str) -> None:
        self.notes.append((place, message))

    def ordered(self, items: list[tuple[Place, str]]) -> list[str]:
        """One line each, in the order of the files and of the lines in them; once each (the
        processes of one program share their program's problems)."""
        last = len(self.file_order)
        ranked = sorted(items, key=lambda item: (self.file_order.get(item[0].file, last),
                                                 item[0].line or 0))
        lines = (f"{place} {message}".replace("\r", "\\r").replace("\n", "\\n")
                 for place, message in ranked)
        return list(dict.fromkeys(lines))

    def place(self, section: str, key: str | None = None) -> Place:
        found = self.places.get((section, key)) or self.places.get((section, None))
        found = found or Place(self.files[0] if self.files else "?", None, section)
        return found if key is None else found.at(key)

    def _read(self, path: Path, what: str) -> tuple[Any, Scan] | None:
        """A file parsed alone and its scan (or None), its problems reported; %(here)s is its
        directory."""
        self.file_order.setdefault(str(path), len(self.file_order))
        self.stamps.append((str(path), stamp_of(str(path))))
        text, problem = read_text(path, what)
        if text is None:
            self.problem(Place(str(path)), str(problem))
            return None
        found = scan(text, str(path))
        for place, message in found.problems:
            self.problem(place, message)
        layer = program_.new_parser()
        try:
            layer.read_string(found.parser_text, str(path))
        except Exception as error:  # the scan follows configparser's rules; this is a backstop
            self.problem(Place(str(path)), program_.one_line(error))
            return None
        layer.defaults().clear()
        layer.expand_here(os.path.abspath(path.parent))
        self.cut |= found.cut
        self.files.append(str(path))
        for section, line in found.sections.items():
            self.places.setdefault((section, None), Place(str(path), line, section))
        return layer, found

    def _merge(self, path: Path, what: str, *, included: bool) -> bool:
        read = self._read(path, what)
        if read is None:
            return False
        layer, found = read
        for section in layer.sections():
            place = Place(str(path), found.sections.get(section), section)
            if included and section == "include":
                self.problem(place, "in an included file is ignored by supervisord (it reads "
                             "[include] in the main file only); list these files there")
                continue
            if self.parser.has_section(section):
                first = self.place(section)
                self.problem(place, f"is already defined at {first.file}:{first.line}; "
                             "supervisord would merge the two silently, define it once")
                continue
            self.places[(section, None)] = place
            self.parser.add_section(section)
            self.parser.section_to_file[section] = str(path)
            for key, value in layer.items(section):
                self.parser.set(section, key, value)
                self.places[(section, key)] = place.at(key, found.keys.get((section, key)))
        return True

    def read_main(self, main: Path) -> None:
        self.here = os.path.abspath(main.parent)
        if not self._merge(main, "catalogue file", included=False):
            return
        if not self.parser.has_section("include"):
            return
        where = self.place("include")
        for key in self.parser.options("include"):
            if key not in program_.INCLUDE_KEYS:
                self.problem(self.place("include", key), "unknown key; [include] takes files = …")
        if not self.parser.has_option("include", "files"):
            self.problem(where, "has no files = …; list the files to include, e.g. "
                         "files = conf.d/*.conf")
            return
        names = {**self.parser.expansions, "here": self.here,
                 "host_node_name": program_.base_names(".", "", "", {})["host_node_name"]}
        try:
            patterns = program_.expand(self.parser.get("include", "files"), names).split()
        except ValueError as error:
            self.problem(self.place("include", "files"), str(error))
            return
        seen = {os.path.abspath(main)}
        for pattern in patterns:
            found = glob.iglob(os.path.join(self.here, pattern))
            matches = sorted(itertools.islice(found, MAX_INCLUDED_FILES + 1))
            self.globs.append((os.path.join(self.here, pattern), tuple(matches)))
            if len(matches) > MAX_INCLUDED_FILES:
                self.problem(self.place("include", "files"), f"{pattern!r} matches more than "
                             f"{MAX_INCLUDED_FILES} files")
                continue
            if not matches:
                self.note(self.place("include", "files"), f"nothing matches {pattern!r}")
            for match in matches:
                if os.path.abspath(match) not in seen:  # the main file or a repeated match
                    seen.add(os.path.abspath(match))
                    self._merge(Path(match), "included file", included=True)

    def apply_overlay(self, overlay: Path) -> None:
        """Replace keys of existing sections: how the demo swaps commands and ports."""
        read = self._read(overlay, "overlay file")
        if read is None:
            return
        layer, found = read
        for section in layer.sections():
            place = Place(str(overlay), found.sections.get(section), section)
            if section == "include":
                self.problem(place, "an overlay cannot include files; list them in the "
                             "catalogue's [include]")
                continue
            if not self.parser.has_section(section):
                # A note, not a problem: removing a service from the catalogue must not make
                # the overlay that adapts it (the demo's) reject every later reload.
                self.note(place, "is not in the catalogue, so the overlay's keys for it are "
                          "ignored")
                continue
            for key, value in layer.items(section):
                self.parser.set(section, key, value)
                self.places[(section, key)] = place.at(key, found.keys.get((section, key)))

