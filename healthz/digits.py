"""Numbers people write (a signal, a port, a timeout, a duration) are read in ASCII digits only.

Python's int(), float(), str.isdigit() and the re module's \\d take every Unicode decimal
digit: a full-width 15 (U+FF11 U+FF15) or an Arabic-Indic one (U+0661 U+0665) reads as 15.
Such a number is a paste from somewhere else more often than a choice, and one that a reader
or a log search does not see as 15 must not quietly act as 15; so it is refused, and the
message says how to write it. podctl and the file monitor import nothing of this package
(they keep the same rule in a line of their own).
"""

from __future__ import annotations

ASCII_ONLY = "write numbers with the ASCII digits 0-9"


def foreign_digits(text: str) -> bool:
    """Whether `text` holds a decimal digit int() would take that is not 0-9."""
    return any(ch.isdecimal() and not ch.isascii() for ch in text)


def is_ascii_number(text: str) -> bool:
    """A non-empty run of 0-9 and nothing else."""
    return text.isascii() and text.isdecimal()
