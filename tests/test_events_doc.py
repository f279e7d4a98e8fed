"""docs/EVENTS.md against the code: every event the engine and the health service emit is
listed with each of its fields, and every listed event is still emitted."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from tests.support import ROOT

EMITTING_PACKAGES = ("start", "healthz")
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# How events are emitted: the engine's EventLog (`events(...)`, `self.events(...)`,
# `ctx.emit(...)`) and structlog's loggers (`log.error(...)`); stdlib logging's messages are
# sentences, never an event's name.
EMITTERS = {"events", "emit"}
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
NOT_FIELDS = {"level"}  # the `level` key, documented in its own column
DOC_ROW = re.compile(r"^\| `([a-z0-9_]+)` \| (.*) \| (.*) \| (\w+) \|$")


@dataclass
class Emitted:
    fields: set[str] = field(default_factory=set)
    levels: set[str] = field(default_factory=set)


def emitted() -> dict[str, Emitted]:
    """Each event name emitted in the source, with every field and level its calls pass."""
    found: dict[str, Emitted] = {}
    for package in EMITTING_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                first, function = node.args[0], node.func
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)
                        and EVENT_NAME.match(first.value)):
                    continue
                logger_method = (isinstance(function, ast.Attribute)
                                 and function.attr in LOG_METHODS)
                if not ((isinstance(function, ast.Name) and function.id in EMITTERS)
                        or (isinstance(function, ast.Attribute) and function.attr in EMITTERS)
                        or logger_method):
                    continue
                event = found.setdefault(first.value, Emitted())
                event.fields.update(k.arg for k in node.keywords
                                    if k.arg is not None and k.arg not in NOT_FIELDS)
                level = next((k.value.value for k in node.keywords if k.arg == "level"
                              and isinstance(k.value, ast.Constant)), None)
                if level is None and logger_method:
                    assert isinstance(function, ast.Attribute)
                    level = function.attr
                event.levels.add(str(level or "info"))
    return found


def documented() -> dict[str, tuple[str, str]]:
    """Each event of docs/EVENTS.md's tables: its fields cell and its level."""
    rows: dict[str, tuple[str, str]] = {}
    for line in (ROOT / "docs" / "EVENTS.md").read_text().splitlines():
        match = DOC_ROW.match(line)
        if match is not None and match.group(4) != "level":
            name, _, fields, level = match.groups()
            assert name not in rows, f"{name} is listed twice in docs/EVENTS.md"
            rows[name] = (fields, level)
    return rows


def test_the_extraction_sees_the_events_it_should() -> None:
    """The scan finds events of each way they are emitted (a scan that finds nothing would
    make the other tests pass for nothing)."""
    found = emitted()
    assert {"spawned", "booted", "drain_incomplete", "control_verb_failed"} <= set(found)
    assert found["spawned"].fields == {"service", "pid"}
    assert len(found) >= 30


def test_every_emitted_event_is_documented_with_its_fields() -> None:
    """An event added to the code must be added to docs/EVENTS.md, with each of its fields."""
    rows = documented()
    missing = sorted(set(emitted()) - set(rows))
    assert not missing, f"emitted but not in docs/EVENTS.md: {', '.join(missing)}"
    for name, event in emitted().items():
        listed = set(re.findall(r"`([a-z_]+)`", rows[name][0]))
        assert event.fields <= listed, (
            f"docs/EVENTS.md, {name}: fields {sorted(event.fields - listed)} not listed")


def test_every_documented_event_is_still_emitted() -> None:
    """An event removed from the code must leave docs/EVENTS.md too."""
    gone = sorted(set(documented()) - set(emitted()))
    assert not gone, f"in docs/EVENTS.md but emitted nowhere: {', '.join(gone)}"


def test_documented_levels_are_the_emitted_ones() -> None:
    """The level column says what the code passes (info when it passes none)."""
    rows = documented()
    for name, event in emitted().items():
        assert event.levels == {rows[name][1]}, (
            f"docs/EVENTS.md, {name}: level {rows[name][1]}, the code's {sorted(event.levels)}")
