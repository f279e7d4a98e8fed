"""Terminal control codes shown, not executed.

A child may write anything: `ESC ] 52` sets the clipboard, `ESC [ 2 J` clears the screen, a
bare `CR` overwrites what a line seemed to say. Where bytes reach a person's terminal (the
console format, `podctl logs` on a TTY) every C0 control but tab and newline, DEL, and every
C1 control is replaced by its escape (`\\x1b`), and bytes that are not UTF-8 by theirs, so
nothing but our own colour codes is ever interpreted. JSON output escapes them already.
"""

from __future__ import annotations

import codecs

TYPE_CHECKING = False  # spares the `typing` import at run time; mypy treats it as True
if TYPE_CHECKING:
    from typing import BinaryIO

_C0 = bytes(c for c in range(0x20) if c not in (0x09, 0x0A)) + b"\x7f"
_TABLE = {c: f"\\x{c:02x}" for c in (*_C0, *range(0x80, 0xA0))}


def escape_controls(data: bytes) -> bytes:
    """`data` with its control codes made visible; plain ASCII text comes back as it is."""
    if data.isascii() and len(data.translate(None, _C0)) == len(data):
        return data
    return _escape_text(data.decode("utf-8", "backslashreplace"))


def _escape_text(text: str) -> bytes:
    return text.translate(_TABLE).encode("utf-8", "backslashreplace")


class EscapingWriter:
    """A binary stream's write and flush, escaping control codes; a UTF-8 sequence split
    between two writes is still one character."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")

    def write(self, data: bytes) -> int:
        text = self._decoder.decode(data)
        self._stream.write(_escape_text(text))
        return len(data)

    def flush(self) -> None:
        self._stream.flush()
