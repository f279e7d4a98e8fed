"""The container-stdout side of the log pump: one valid JSON object per child line, whatever
bytes the line holds, and a coloured prefix on a TTY."""

from __future__ import annotations

import json
import os

import pytest

from start.logs import Console

LINES = [
    b"plain ascii",
    b'quote " and backslash \\ inside',
    b"tab\there and a carriage return\r",
    "unicode \u00e9\u2028 line separator".encode(),
    b"invalid utf-8 \xff\xfe",
    b"",
    b"form feed \x0c and escape \x1b[31m",
]


def _console_output(pretty: bool, chunk: bytes) -> bytes:
    read_end, write_end = os.pipe()
    try:
        console = Console(write_end, fmt="console" if pretty else "json")
        console.child_lines("svc", "stdout", 42, chunk)
        os.close(write_end)
        write_end = -1
        data = b""
        while part := os.read(read_end, 65536):
            data += part
        return data
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


@pytest.mark.parametrize("lines", [LINES[:1] * 3, LINES], ids=["fast-path", "escaping"])
def test_every_line_is_one_json_object_with_its_message(lines: list[bytes]) -> None:
    """Each line becomes exactly one JSON object whose message is the line, decoded."""
    out = _console_output(False, b"\n".join(lines) + b"\n")
    records = [json.loads(line) for line in out.split(b"\n") if line]
    assert [r["message"] for r in records] == [
        line.decode("utf-8", "replace") for line in lines]
    assert {(r["service"], r["stream"], r["pid"]) for r in records} == {("svc", "stdout", 42)}
    assert all(r["ts"].endswith("Z") for r in records)


def test_console_format_prefixes_each_line_with_the_service() -> None:
    """On a TTY (or CODITECT_LOG_FORMAT=console): `svc      | line`, coloured."""
    out = _console_output(True, b"one\ntwo\n")
    lines = out.decode().splitlines()
    assert len(lines) == 2
    assert all("svc" in line and "|" in line and "\x1b[" in line for line in lines)
    assert lines[0].endswith(" one") and lines[1].endswith(" two")
