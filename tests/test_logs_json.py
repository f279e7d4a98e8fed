"""The per-chunk JSON encoder of the log pump, against json's own encoder line by line: the same
bytes on the fast path (nothing to escape) and on the escaping one, whatever the chunk holds and
wherever the reads cut it."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import tempfile
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from start.logs import Console, Pump, ServiceLog
from start.logs_json import EMBED_MAX, ESCAPES, encode, escaped, timestamp

HEAD = b'{"ts": "2026-01-01T00:00:00.000Z", "service": "svc", "stream": "stdout", "pid": 7, ' \
       b'"message": "'


def _reference(head: bytes, chunk: bytes) -> bytes:
    """What the pump wrote before it worked per chunk: json's encoder, one line at a time."""
    body = chunk[:-1] if chunk.endswith(b"\n") else chunk
    return b"".join(head + encode_basestring(line.decode("utf-8", "replace")).encode()[1:]
                    + b"}\n" for line in body.split(b"\n"))


def _encoded(head: bytes, chunk: bytes) -> bytes:
    objects, length = encode(head, chunk)
    return head + objects[:length]


# Pieces of lines: clean ASCII (the fast path), UTF-8, every byte JSON escapes, invalid UTF-8.
FRAGMENTS = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(str.encode),
    st.text(max_size=10).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=10),
    st.sampled_from([b'"', b"\\", b"\\n", b"\r", b"\t", b"\x00", b"\x1b[31m", b"\x7f", b"\xff",
                     b"\xe2\x82", b"\xed\xa0\x80", "\u2028".encode()]),
    st.sampled_from([b"\n", b"\r\n", b"\n\n"]),
)
# No "{": a line that is a JSON object is embedded (tested on its own below), not a string.
DATA = st.lists(FRAGMENTS, max_size=60).map(lambda pieces: b"".join(pieces).replace(b"{", b"("))


@given(chunk=DATA)
@settings(max_examples=500, deadline=None)
def test_chunk_encodes_as_json_does_line_by_line(chunk: bytes) -> None:
    """Any chunk (whole lines, or a piece with no newline at its end): the bytes json's own
    encoder gives for each of its lines, every object valid JSON with the line as message."""
    assert _encoded(HEAD, chunk) == _reference(HEAD, chunk)


@pytest.mark.parametrize("clean", [b"0123456789 plain ascii line\n" * 3000,
                                   "caf\u00e9 \u2603 \U0001f600 utf-8\n".encode() * 3000],
                         ids=["ascii", "utf-8"])
def test_a_chunk_with_nothing_to_escape_is_its_own_json_text(clean: bytes) -> None:
    """The fast path: no byte needs escaping (valid UTF-8, no control character, quote or
    backslash), so the chunk is used as it is, not copied or decoded line by line."""
    assert escaped(clean) is clean
    assert _encoded(HEAD, clean) == _reference(HEAD, clean)


@pytest.mark.parametrize("size", [100, 80_000], ids=["small", "large"])
@pytest.mark.parametrize("raw", [raw for raw, _ in ESCAPES], ids=repr)
def test_each_escaped_byte_anywhere_in_a_chunk(raw: bytes, size: int) -> None:
    """Each byte JSON escapes, in a small chunk and a large one (each scanned its own way),
    at the start, in the middle and at the end of a line."""
    lines = bytearray(b"abcdefghij" * (size // 10))
    lines[len(lines) // 2: len(lines) // 2 + 1] = raw
    chunk = raw + bytes(lines).replace(b"j" * 1, b"j\n", 40) + raw + b"\n"
    assert _encoded(HEAD, chunk) == _reference(HEAD, chunk)


def test_invalid_utf8_is_replaced_line_by_line() -> None:
    """A broken sequence cut by a newline is replaced as if its line were decoded alone."""
    chunk = b"a\xe2\x82\nb\xff\xfe\n\xf0\x9f\x98\n\xc3\xa9 ok\n"
    records = [json.loads(line) for line in _encoded(HEAD, chunk).split(b"\n")[:-1]]
    assert [r["message"] for r in records] == ["a\ufffd", "b\ufffd\ufffd", "\ufffd", "\u00e9 ok"]


def test_timestamp_is_utc_with_milliseconds() -> None:
    """The same text the engine's events carry."""
    assert timestamp(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert timestamp(1_700_000_000_000) == "2023-11-14T22:13:20.000Z"


def _pump_through(pieces: list[bytes]) -> tuple[bytes, list[bytes]]:
    """Each piece written to a real pipe and read by the pump: (log file, stdout lines)."""
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as scratch:
        out = os.open(Path(scratch) / "stdout", os.O_WRONLY | os.O_CREAT)
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        log = ServiceLog(Path(scratch) / "svc.log", 0, 0, on_error=pytest.fail)
        pump = Pump(loop, read_end, service="svc", stream="stdout", pid=7, log=log,
                    console=Console(out, fmt="json"))
        try:
            for piece in pieces:
                if piece:
                    os.write(write_end, piece)
                    pump._readable()  # one read: the piece, so reads end where pieces do
            os.close(write_end)
            pump._readable()  # end of file: the last line, even without its newline
            assert pump.closed.done()
            log.close()
            return ((Path(scratch) / "svc.log").read_bytes(),
                    (Path(scratch) / "stdout").read_bytes().split(b"\n")[:-1])
        finally:
            os.close(out)
            os.close(read_end)
            loop.close()


@given(data=DATA, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
@settings(max_examples=300, deadline=None)
def test_pump_writes_every_line_once_wherever_reads_cut(data: bytes, cuts: list[int]) -> None:
    """Reads ending anywhere (mid-line, mid-UTF-8 sequence, between "\\r" and "\\n"): the log
    file holds exactly the bytes written, and stdout one JSON object per line, in order, its
    message the line (a last line without newline too), encoded as json encodes it."""
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    file, objects = _pump_through([data[a:b] for a, b in itertools.pairwise(bounds)])
    assert file == data + (b"\n" if data and not data.endswith(b"\n") else b"")
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    assert [json.loads(o)["message"] for o in objects] == [
        line.decode("utf-8", "replace") for line in lines]
    for line, obj in zip(lines, objects, strict=True):
        assert obj.endswith(encode_basestring(line.decode("utf-8", "replace")).encode() + b"}")
        assert json.loads(obj)["pid"] == 7


def _records(chunk: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _encoded(HEAD, chunk).split(b"\n")[:-1]]


def test_a_line_that_is_a_json_object_is_embedded_under_json() -> None:
    """A JSON-logging child (our file monitor): its object under `json`, its own message (or
    `msg`, or `event`) as `message`, the plain lines around it untouched and in order."""
    monitor = {"ts": "2026-01-01T00:00:00Z", "level": "info", "message": "watching",
               "root": "/workspace", "nested": {"n": [1, 2.5, None, True]}}
    chunk = (b"plain before\n" + json.dumps(monitor).encode() + b"\n"
             + b'{"msg": "from msg", "x": 1}\n{"event": "from event"}\n{"n": 1}\n'
             + "{\"message\": \"caf\u00e9 \\\"quoted\\\"\"}\n".encode() + b"plain after\n")
    records = _records(chunk)
    assert [r["message"] for r in records] == [
        "plain before", "watching", "from msg", "from event", '{"n": 1}',
        'caf\u00e9 "quoted"', "plain after"]
    assert records[1]["json"] == monitor
    assert records[4]["json"] == {"n": 1}
    assert all("json" not in records[i] for i in (0, 6))
    assert all(set(r) - {"json"} == {"ts", "service", "stream", "pid", "message"}
               for r in records)


def test_an_object_is_embedded_as_its_own_text() -> None:
    """Not parsed and written again: what JSON allows and Python would write otherwise (a
    number beyond a float, a lone surrogate's escape, key order, spacing) is kept, and the
    line's own whitespace around it ("\r" of a CRLF line) is not."""
    line = b'{"big": 1e999, "s": "\\ud800", "b": 1,"a": [ ]}'
    objects, length = encode(HEAD, line + b"\r\n")
    assert (HEAD + objects[:length]).endswith(b'"json": ' + line + b"}\n")
    [record] = _records(line + b"\r\n")
    assert record["json"]["big"] == float("inf") and record["json"]["s"] == "\ud800"
    assert record["message"] == line.decode() + "\r"


@pytest.mark.parametrize("line", [
    b"{" + b'"k": "' + b"x" * EMBED_MAX + b'"}',  # huge
    b'{"k": 1',  # cut short
    b"{not json}",
    b'{"k": NaN}',  # Python reads it; JSON has no NaN
    b'{"k": -Infinity}',
    b'{"k": "\xff"}',  # invalid UTF-8
    b'{"k": "raw\ttab"}',  # a control character inside a string
    b"{" * 20_000,  # too long, and too deep to parse
    b'{"a": ' * 1500 + b"1" + b"}" * 1500,  # short enough, too deep to parse
    b'{"k": 1} trailing',
], ids=["huge", "cut", "invalid", "nan", "infinity", "bad-utf8", "control", "braces",
        "deep", "trailing"])
def test_a_huge_or_invalid_json_line_stays_a_string(line: bytes) -> None:
    """Whatever looks like an object but is not one a collector could read stays the line."""
    [record] = _records(line + b"\n")
    assert "json" not in record
    assert record["message"] == line.decode("utf-8", "replace")
    assert _encoded(HEAD, line + b"\n") == _reference(HEAD, line + b"\n")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(), lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@given(objects=st.lists(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6),
                        max_size=5), plain=DATA)
@settings(max_examples=100, deadline=None)
def test_any_json_object_line_is_embedded_as_it_was(objects: list[dict[str, Any]],
                                                    plain: bytes) -> None:
    """Any object (any keys, nesting, text; no lone surrogate, which hypothesis's text never
    holds) comes back equal under `json`, after the plain lines, in its place."""
    lines = [json.dumps(obj, ensure_ascii=i % 2 == 0).encode() for i, obj in enumerate(objects)]
    chunk = plain + (b"\n" if plain and not plain.endswith(b"\n") else b"") + b"".join(
        line + b"\n" for line in lines)
    records = _records(chunk)
    assert [r.get("json") for r in records] == [None] * (len(records) - len(objects)) + objects
