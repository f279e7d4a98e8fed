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
        raise NotAnObject(f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise NotAnObject(f"a JSON {type(value).__name__}, not an object")
    return value


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
    return (json.dumps(settings, indent=2, ensure_ascii=False) + "\n").encode()
