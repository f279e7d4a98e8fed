"""Child lines as JSON objects for container stdout, built a chunk at a time.

A chunk is what one read of a child's pipe brought: many lines that arrived together and share
one timestamp. Its JSON copy is made with C-level bytes operations over the whole chunk (one
`replace` per kind of character that needs escaping, then one that turns every newline into the
end of one object and the start of the next), never a Python step per line. The output is byte
for byte what json's own string encoder (`ensure_ascii=False`) gives line by line.

A line that is itself a JSON object (a child that logs JSON, such as our file monitor) is
embedded as an object under `json`, its `message` the object's own message (`message`, `msg`
or `event`) or else the line as it is (docs/EVENTS.md, "One stream"). Only a chunk with a line
that starts with `{` takes that path, a line at a time; a chunk without a brace is told by one
memchr, so plain text keeps the fast path.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from json.encoder import encode_basestring

# The bytes a JSON string escapes, each with json's own escape for it. The backslash comes first:
# the escapes after it add backslashes, which must not be escaped again. Not "\n": a chunk's
# newlines are its line ends.
ESCAPES: tuple[tuple[bytes, bytes], ...] = tuple(
    (char.encode(), encode_basestring(char)[1:-1].encode())
    for char in ["\\", '"', *(chr(c) for c in range(0x20) if c != 0x0A)])
_ESCAPED = b"".join(raw for raw, _ in ESCAPES)
# A longer line stays a string: parsing and re-encoding it would cost the pump more than the
# object is worth to a reader, and a line cut into pieces (MAX_PARTIAL_LINE) is no object.
EMBED_MAX = 16 << 10
# The keys whose string value a JSON-logging child means as its line's text, in that order.
MESSAGE_KEYS = ("message", "msg", "event")
# Below this many bytes one translate() pass finds an escapable byte soonest; above it one
# memchr per escapable byte does (~2x faster per byte, but ~0.1 us more per call).
_SCAN_BY_BYTE = 32 << 10


class Heads:
    """The part of an object before its message's text, per pipe, rebuilt once a millisecond:
    lines read together arrived together and share their timestamp."""

    def __init__(self) -> None:
        self._heads: dict[tuple[str, str, int], tuple[int, bytes]] = {}
        self._stamp = (-1, "")

    def __call__(self, service: str, stream: str, pid: int) -> bytes:
        ms = time.time_ns() // 1_000_000
        key = (service, stream, pid)
        cached = self._heads.get(key)
        if cached is not None and cached[0] == ms:
            return cached[1]
        if self._stamp[0] != ms:
            self._stamp = (ms, timestamp(ms))
        head = (f'{{"ts": "{self._stamp[1]}", "service": {json.dumps(service)}, '
                f'"stream": "{stream}", "pid": {pid}, "message": "').encode()
        if len(self._heads) > 256:  # pids of children long gone
            self._heads.clear()
        self._heads[key] = (ms, head)
        return head


def timestamp(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, as the engine's own events carry."""
    moment = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _needs_escaping(chunk: bytes) -> bool:
    if len(chunk) < _SCAN_BY_BYTE:
        return len(chunk.translate(None, _ESCAPED)) != len(chunk)
    return any(raw in chunk for raw, _ in ESCAPES)


def escaped(chunk: bytes) -> bytes:
    """The chunk as the text of JSON strings, UTF-8, its newlines left as they are."""
    if not chunk.isascii():
        try:
            chunk.decode()
        except UnicodeDecodeError:
            # Decoding the chunk at once is decoding each line: "\n" is never part of a UTF-8
            # sequence, so an invalid one is replaced the same either way.
            chunk = chunk.decode("utf-8", "replace").encode()
    if _needs_escaping(chunk):
        for raw, escape in ESCAPES:
            if raw in chunk:
                chunk = chunk.replace(raw, escape)
    return chunk


def encode(head: bytes, chunk: bytes) -> tuple[bytes, int]:
    """JSON objects for `chunk`: whole lines, or one piece of an over-long line (no newline at
    its end), which becomes an object of its own.

    Returns `objects` and a length: `head + objects[:length]` is the output, one object a line.
    The newline of the last line turns into the start of one more object, cut off by `length`:
    that spares copying the whole output again to remove it (the console writes a memoryview)."""
    # memchr for "{" first: a search for "\n{" costs as much as the whole encoding (~1 us
    # against ~70 us a 64 KiB chunk here), so only a chunk that holds a brace pays for it.
    if b"{" in chunk and (chunk.startswith(b"{") or b"\n{" in chunk):
        return _encode_lines(head, chunk)
    body = escaped(chunk)
    if not body.endswith(b"\n"):
        body += b"\n"
    objects = body.replace(b"\n", b'"}\n' + head)
    return objects, len(objects) - len(head)


def _encode_lines(head: bytes, chunk: bytes) -> tuple[bytes, int]:
    """`encode`'s result a line at a time, for a chunk where some line may be a JSON object."""
    lines = chunk.split(b"\n")
    if chunk.endswith(b"\n"):
        lines.pop()
    out = []
    for line in lines:
        embedded = _embedded(line) if line.startswith(b"{") else None
        if embedded is None:
            out.append(head + escaped(line) + b'"}\n')
        else:
            message, obj = embedded
            out.append(head + message + b'", "json": ' + obj + b"}\n")
    objects = b"".join(out)[len(head):]
    return objects, len(objects)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# Python's json reads NaN and Infinity, which are not JSON: such a line stays a string.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _embedded(line: bytes) -> tuple[bytes, bytes] | None:
    """(the message's JSON text, the object's) for a line that is a JSON object: its own text,
    checked but not encoded again, so it is embedded as it was. None for any other line (too
    long, invalid JSON or UTF-8, not an object, NaN or Infinity, too deep), which then stays a
    string like every other line."""
    text = line.strip(b" \t\r")  # JSON's own whitespace ("\n" ended the line)
    if len(text) > EMBED_MAX or not text.endswith(b"}"):
        return None
    try:
        parsed = _DECODER.decode(text.decode())
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(parsed, dict):
        return None
    said = next((parsed[key] for key in MESSAGE_KEYS if isinstance(parsed.get(key), str)), None)
    if said is None:
        return escaped(line), text
    # encode_basestring escapes what JSON must (a newline in it too); a lone surrogate from a
    # "\ud800" escape cannot be UTF-8 and becomes "?".
    return encode_basestring(said)[1:-1].encode("utf-8", "replace"), text
