"""What a service name may be: one rule for the catalogue, the HTTP faces and podctl.

Its own module, importing nothing, so that reading a catalogue (before the first fork) and
podctl's start-up pay nothing for it. The rule keeps a name usable in a URL and as a file name
under `$CODITECT_HOME/logs`: no `/`, and no `.` or `-` first (not hidden, not an option).
"""

from __future__ import annotations

MAX_LENGTH = 128
RULE = ("letters, digits and '_', with '.' or '-' after the first character, "
        f"at most {MAX_LENGTH} in all")
_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_REST = _FIRST | frozenset(".-")


def is_service_name(text: str) -> bool:
    """Whether `text` can be a service name; checked before a name is looked up or used."""
    return (0 < len(text) <= MAX_LENGTH and text[0] in _FIRST
            and all(c in _REST for c in text[1:]))
