"""settings.json: parse it, and merge the template's keys into the user's.

The user's values always win. Only keys the user's file lacks are added, recursively through
objects; arrays are values too, so a pattern the user removed from `autoApprove` stays removed.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

JsonObject = dict[str, Any]

# Bounds on what a settings file may be, so that no file can make the merge recurse past
# Python's stack or read the volume into memory: past them the file is set aside like any
# other invalid one. Real settings are a few KiB and a few levels deep.
MAX_BYTES = 4 << 20
MAX_DEPTH = 64


class NotAnObject(ValueError):
    """The text is not JSON, or not a JSON object."""


@dataclass(frozen=True, slots=True)
class Merged:
    """The merge result and the dotted paths of the keys it added."""

    settings: JsonObject
    added: tuple[str, ...]


def parse(data: bytes) -> JsonObject:
    """The JSON object in `data`, or NotAnObject saying why not."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError
        raise NotAnObject(f"not valid JSON: {_short(err)}") from None
    if not isinstance(value, dict):
        raise NotAnObject(f"a JSON {type(value).__name__}, not an object")
    if depth(value) > MAX_DEPTH:
        raise NotAnObject(f"nested deeper than {MAX_DEPTH} levels")
    return value


def depth(value: Any) -> int:
    """How deeply objects and arrays nest in `value` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            level += 1
            deepest = max(deepest, level)
            stack.extend((child, level) for child in item if isinstance(child, dict | list))
    return deepest


def merge(user: JsonObject, template: JsonObject) -> Merged:
    """`user` plus every key of `template` it lacks; `user` itself is not changed."""
    result = copy.deepcopy(user)
    added: list[str] = []
    _fill(result, template, "", added)
    return Merged(result, tuple(added))


def _fill(into: JsonObject, source: JsonObject, prefix: str, added: list[str]) -> None:
    for key, value in source.items():
        path = f"{prefix}{key}"
        if key not in into:
            into[key] = copy.deepcopy(value)
            added.append(path)
        elif isinstance(into[key], dict) and isinstance(value, dict):
            _fill(into[key], value, f"{path}.", added)


def render(settings: JsonObject) -> bytes:
    text = json.dumps(settings, indent=2, ensure_ascii=False) + "\n"
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") read from an escape: keep it one
        return (json.dumps(settings, indent=2) + "\n").encode()


def _short(err: BaseException) -> str:
    """The parser's reason on one short line (a RecursionError's is long and says nothing)."""
    if isinstance(err, RecursionError):
        return f"nested deeper than {MAX_DEPTH} levels"
    return " ".join(str(err).split())[:200]
