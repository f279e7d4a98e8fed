""""Did you mean …?": the one hint for a word that is nearly a known one (a key, a section
kind, a program), used by the catalogue's checks and the `[health:x]` grammar alike."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable


def did_you_mean(word: str, known: Iterable[str], shown: Callable[[str], str] = repr) -> str:
    """`; did you mean X?` with the known word closest to `word` (as `shown` writes it), or ""
    when none is close enough (difflib's ratio under 0.6)."""
    close = difflib.get_close_matches(word, set(known), n=1)
    return f"; did you mean {shown(close[0])}?" if close else ""
