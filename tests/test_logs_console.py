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


def test_console_format_keeps_a_piece_without_newline_on_its_own_line() -> None:
    """An over-long line's piece (no newline at its end) still ends its console line."""
    out = _console_output(True, b"one\npiece")
    assert [line.partition(b"|\x1b[0m ")[2] for line in out.split(b"\n")[:-1]] == [b"one", b"piece"]
    assert out.endswith(b"piece\n")


def _fill(fd: int) -> int:
    """Fill a pipe until a write would block: stdout as a stalled log collector leaves it."""
    os.set_blocking(fd, False)
    filled = 0
    while True:
        try:
            filled += os.write(fd, b"x" * 4096)
        except BlockingIOError:
            return filled


def test_a_stalled_stdout_keeps_whole_lines_and_counts_the_dropped_ones() -> None:
    """Past the buffer's limit a chunk keeps the lines that fit and drops the rest, each
    dropped line counted once; what was kept reaches stdout whole, in order, once it drains."""
    read_end, write_end = os.pipe()
    try:
        filled = _fill(write_end)
        console = Console(write_end, fmt="json", limit=10_000)
        reported: list[tuple[str, int]] = []
        console.on_drop = lambda source, n: reported.append((source, n))
        chunk = b"".join(b"line %04d %s\n" % (i, b"y" * 20) for i in range(200))
        console.child_lines("svc", "stdout", 42, chunk)  # ~27 KB of JSON: part fits
        console.child_lines("svc", "stdout", 42, chunk)  # nothing fits any more
        dropped = console.dropped["svc"]
        assert dropped == sum(n for _, n in reported) and 200 < dropped < 400
        assert all(source == "svc" for source, _ in reported)
        os.set_blocking(read_end, False)
        drained = 0
        while drained < filled:
            drained += len(os.read(read_end, filled - drained))
        console.flush(block=True)
        os.close(write_end)
        write_end = -1
        data = b""
        while part := os.read(read_end, 65536):
            data += part
        messages = [json.loads(line)["message"] for line in data.split(b"\n")[:-1]]
        assert len(messages) == 400 - dropped
        assert messages == [f"line {i:04d} {'y' * 20}" for i in range(len(messages))]
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
