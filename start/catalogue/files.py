"""Reading catalogue files safely, and the map of where every section and key is written.

Python's configparser (under supervisor's `UnhosedConfigParser`) gives values but not line
numbers, merges a repeated section or key silently (supervisord runs it with strict=False), and
cuts a value at ` ;` or ` #` even inside quotes. `scan` walks the text with configparser's own
rules and patterns, so that both see the same sections and keys, and reports what the parser
would hide. Nothing here raises on content: every problem is returned, with its line.
"""

from __future__ import annotations

import configparser
import io
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

MAX_FILE_BYTES = 1 << 20  # a catalogue file larger than this is a mistake, not a catalogue
MAX_BAD_LINES = 10  # junk past this is summed up in one line

_SECTION = configparser.RawConfigParser.SECTCRE
_OPTION = configparser.RawConfigParser.OPTCRE
_NONSPACE = re.compile(r"\S")
_COMMENT_PREFIXES = ("#", ";")
_COMMANDS = ("command", "ready", "live")  # supervisor's parser: full-line and inline alike


@dataclass(frozen=True, slots=True)
class Place:
    """Where something is written: `file:line: [section] key:`, each part when known."""

    file: str
    line: int | None = None
    section: str | None = None
    key: str | None = None

    def at(self, key: str, line: int | None = None) -> Place:
        return Place(self.file, line or self.line, self.section, key)

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:" if self.line else f"{self.file}:"
        if self.section is not None:
            text += f" [{self.section}]"
        if self.key is not None:
            text += f" {self.key}:"
        return text


def read_text(path: Path, what: str) -> tuple[str | None, str | None]:
    """The file's text, or None and why not (to follow its name). Only regular files are
    opened (a FIFO or a device named by an include would block or never end), and never more
    than MAX_FILE_BYTES."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None, f"{what} not found"
    except OSError as error:
        return None, f"cannot read {what}: {error.strerror or error}"
    except ValueError as error:  # a path holding a NUL byte
        return None, f"cannot read {what}: {error}"
    if stat.S_ISDIR(info.st_mode):
        return None, f"{what} is a directory, not a file"
    if not stat.S_ISREG(info.st_mode):
        return None, f"{what} is not a regular file"
    if info.st_size > MAX_FILE_BYTES:
        return None, f"{what} is larger than {MAX_FILE_BYTES} bytes"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_FILE_BYTES and (chunk := os.read(fd, 1 << 16)):
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except OSError as error:
        return None, f"cannot read {what}: {error.strerror or error}"
    data = b"".join(chunks)
    if len(data) > MAX_FILE_BYTES:
        return None, f"{what} is larger than {MAX_FILE_BYTES} bytes"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"{what} is not UTF-8 text (byte {error.start})"
    if "\x00" in text:
        return None, f"{what} holds NUL bytes: it is not a text file"
    return text.removeprefix("\ufeff"), None


@dataclass(slots=True)
class Scan:
    """What one file holds, by line: the first header of each section, the line of each key,
    and the problems the parser would not report."""

    sections: dict[str, int] = field(default_factory=dict)
    keys: dict[tuple[str, str], int] = field(default_factory=dict)
    problems: list[tuple[Place, str]] = field(default_factory=list)
    cut: set[tuple[str, str]] = field(default_factory=set)  # values cut inside quotes
    parser_text: str = ""  # the text with unparseable lines turned into comments


def scan(text: str, file: str) -> Scan:
    """Walk `text` as configparser does (same patterns, same continuation and comment rules)."""
    result = Scan()
    lines = list(io.StringIO(text))
    section: str | None = None
    option: str | None = None
    value = ""
    indent = 0
    bad: list[int] = []
    hidden: list[int] = []  # lines kept from the parser, their problem already told
    unclosed = False  # inside the body of a header whose `]` is missing
    for lineno, line in enumerate(lines, start=1):
        cut = _inline_comment(line)
        if line.strip().startswith(_COMMENT_PREFIXES):
            cut = 0
        kept = line[:cut].strip() if cut is not None else line.strip()
        if not kept:
            if cut is None and option is not None:
                value += "\n"
            continue
        first = _NONSPACE.search(line)
        level = first.start() if first else 0
        if section is not None and option is not None and level > indent:
            value += "\n" + kept
            if cut is not None:
                _check_cut(result, Place(file, lineno, section, option), value)
            continue
        indent = level
        header = _SECTION.match(kept)
        if header:
            section, option, unclosed = header.group("header"), None, False
            first_line = result.sections.setdefault(section, lineno)
            if first_line != lineno:
                result.problems.append((
                    Place(file, lineno, section),
                    f"is defined twice in this file (first at line {first_line}); supervisord "
                    "would merge the two silently, define it once"))
            if section == configparser.DEFAULTSECT:
                result.problems.append((
                    Place(file, lineno, section),
                    "gives its keys to every section (a configparser rule supervisord "
                    "inherits); write them in the sections that need them"))
            continue
        if kept.startswith("[") and "]" not in kept:
            # `[program:nginx` is a header with its `]` forgotten, not junk: say so, and keep
            # the keys under it out of the section above, where they would land otherwise.
            hidden.append(lineno)
            section, option, unclosed = kept[1:].strip() or "?", None, True
            result.problems.append((Place(file, lineno), (
                f"{_shown(kept)} is an unclosed section header: end it with ']', e.g. "
                f"[{section}]")))
            continue
        if unclosed:
            hidden.append(lineno)  # under an unclosed header: reported with it
            continue
        if section is None:
            bad.append(lineno)
            if len(bad) <= MAX_BAD_LINES:
                result.problems.append((Place(file, lineno), (
                    f"{_shown(kept)} comes before any [section]; a catalogue file starts "
                    "with a section header such as [program:NAME]")))
            continue
        match = _OPTION.match(kept)
        name = match.group("option").rstrip().lower() if match else ""
        if not match or not name:
            bad.append(lineno)
            if len(bad) <= MAX_BAD_LINES:
                result.problems.append((Place(file, lineno, section), (
                    f"cannot read {_shown(kept)}: expected key = value, a [section] or a "
                    "comment (a continuation line must be indented)")))
            continue
        option, value = name, match.group("value").strip()
        first_line = result.keys.setdefault((section, option), lineno)
        if first_line != lineno:
            result.problems.append((
                Place(file, lineno, section, option),
                f"set twice in this section (first at line {first_line}); supervisord keeps "
                "the last silently, remove one"))
        if cut is not None:
            _check_cut(result, Place(file, lineno, section, option), value)
    if len(bad) > MAX_BAD_LINES:
        result.problems.append((Place(file), (
            f"{len(bad) - MAX_BAD_LINES} more lines cannot be read; is this a catalogue "
            "file?")))
    for lineno in (*bad, *hidden):
        lines[lineno - 1] = ";\n"
    result.parser_text = "".join(lines)
    return result


def _inline_comment(line: str) -> int | None:
    """Where configparser's inline comment starts: ';' or '#' at the start or after a space."""
    return next((index for index, char in enumerate(line)
                 if char in _COMMENT_PREFIXES and (index == 0 or line[index - 1].isspace())),
                None)


def _check_cut(result: Scan, place: Place, kept: str) -> None:
    """A comment that starts inside quotes was not meant as one: say where the value ends."""
    if not _inside_quotes(kept):
        return
    assert place.section is not None and place.key is not None
    result.cut.add((place.section, place.key))
    script = ", or move the command into a script" if place.key in _COMMANDS else ""
    result.problems.append((place, (
        "a space followed by ';' or '#' starts a comment in supervisord's dialect, even inside "
        f"quotes: the value ends at {_shown(kept.splitlines()[-1])}; remove that space"
        f"{script}")))


def _inside_quotes(text: str) -> bool:
    """Whether `text` ends inside a '…' or "…" string, with the shell's quoting rules."""
    quote: str | None = None
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = None if char == "'" else quote
        elif char == "\\":
            escaped = True
        elif quote == '"':
            quote = None if char == '"' else quote
        elif char in "'\"":
            quote = char
    return quote is not None


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")
