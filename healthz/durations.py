"""Durations as the catalogue writes them: ``2s``, ``500ms``, ``1m``, ``1h``, ``1m30s``, ``1.5``.

A bare number means seconds, like supervisord's own ``startsecs``. Imports nothing heavy: the
engine parses the catalogue before it spawns its first child.
"""

from __future__ import annotations

import math
import re

from healthz.digits import ASCII_ONLY, foreign_digits

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# One or more `<number><unit>` parts ("1m30s"), or a single bare number.
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)", re.ASCII)
_BARE = re.compile(r"\d+(?:\.\d*)?|\.\d+", re.ASCII)

_EXPECTED = "expected a number with a unit, e.g. 2s, 500ms, 1m, 1h (a bare number is seconds)"


def parse_duration(text: str) -> float:
    """Seconds in `text`; ValueError naming the text when it is not a non-negative duration."""
    stripped = text.strip().lower()
    if not stripped:
        raise ValueError(f"empty duration; {_EXPECTED}")
    if foreign_digits(stripped):
        raise ValueError(f"{text.strip()!r} is not a duration; {ASCII_ONLY}")
    if stripped.startswith("-"):
        raise ValueError(f"{text.strip()!r} is negative; a duration is 0 or more")
    if _BARE.fullmatch(stripped):
        seconds = float(stripped)
    else:
        seconds = 0.0
        position = 0
        units_seen: list[str] = []
        for match in _PART.finditer(stripped):
            if match.start() != position:
                break
            unit = match.group(2)
            if unit in units_seen:
                raise ValueError(f"{text.strip()!r} names the unit {unit!r} twice")
            units_seen.append(unit)
            seconds += float(match.group(1)) * _UNIT_SECONDS[unit]
            position = match.end()
        if position != len(stripped) or not units_seen:
            raise ValueError(f"{text.strip()!r} is not a duration; {_EXPECTED}")
    if not math.isfinite(seconds):
        raise ValueError(f"{text.strip()!r} is too large to be a duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The short human form used in probe reasons: 2 → ``2s``, 0.5 → ``500ms``, 90 → ``90s``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.3g}s"
