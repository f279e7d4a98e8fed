"""One log stream: the engine's events and the children's lines leave stdout in the order they
happened, with one schema (docs/EVENTS.md, "One stream"), in JSON and on a person's console."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

from start.events import EventLog
from start.logs import Console

# The engine-level check (a real pod) is tests/test_engine_logs.py's.
CHILD_KEYS = {"ts", "service", "stream", "pid", "message"}
EVENT_KEYS = CHILD_KEYS | {"level", "event", "logger"}


class _Pipe:
    """A Console on a real pipe: `now()` is what reached the pipe so far, `lines` all of it
    once the block ends."""

    def __init__(self, fmt: str) -> None:
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        self.console = Console(self.write_end, fmt=fmt)
        self.data = b""
        self.lines: list[bytes] = []

    def now(self) -> bytes:
        with contextlib.suppress(BlockingIOError):
            while part := os.read(self.read_end, 65536):
                self.data += part
        return self.data


@contextmanager
def _stdout(fmt: str) -> Iterator[tuple[Console, _Pipe]]:
    pipe = _Pipe(fmt)
    try:
        yield pipe.console, pipe
        os.close(pipe.write_end)
        pipe.write_end = -1
        pipe.lines += pipe.now().split(b"\n")[:-1]
    finally:
        os.close(pipe.read_end)
        if pipe.write_end >= 0:
            os.close(pipe.write_end)


def test_events_held_at_boot_keep_their_place_before_later_child_lines() -> None:
    """Before structlog is loaded an event is held; a child's line read after it still comes
    after it on stdout, and the lines of both kinds are in the order of their `ts`."""
    with _stdout("json") as (console, out):
        events = EventLog(console)
        events("spawned", service="talker", pid=42)
        console.child_lines("talker", "stdout", 42, b"hello\n")
        events("ready", service="talker")
        console.child_lines("talker", "stderr", 42, b"warming up\n")
        assert out.now() == b""  # nothing leaves before the held events are written
        events.configure()
        events("exited", service="talker", pid=42, status="exit 0", ran_seconds=0.1)
    records = [json.loads(line) for line in out.lines]
    assert [(r.get("event"), r["message"]) for r in records] == [
        ("spawned", "spawned talker pid=42"), (None, "hello"), ("ready", "ready talker"),
        (None, "warming up"),
        ("exited", 'exited talker pid=42 status="exit 0" ran_seconds=0.1')]
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)


def test_an_event_has_the_keys_of_a_child_line_and_its_own() -> None:
    """`ts`, `service`, `stream`, `pid`, `message` on every line, in that order; an event adds
    `level`, `event`, its fields and `logger`. The pod's own events are the engine's."""
    with _stdout("json") as (console, out):
        events = EventLog(console)
        events.configure()
        events("spawned", service="talker", pid=42)
        events("backoff", service="talker", delay_seconds=0.5, reason="exit 1")
        events("draining", timeout_seconds=25.0)
        console.child_lines("talker", "stdout", 42, b"hello\n")
    spawned, backoff, draining, child = (json.loads(line) for line in out.lines)
    assert list(spawned)[:5] == list(child) == ["ts", "service", "stream", "pid", "message"]
    assert set(spawned) == EVENT_KEYS and set(child) == CHILD_KEYS
    assert (spawned["service"], spawned["stream"], spawned["pid"]) == ("talker", "event", 42)
    assert (spawned["level"], spawned["event"], spawned["logger"]) == (
        "info", "spawned", "coditect-start")
    assert backoff["pid"] is None  # about a service, no one process
    assert backoff["message"] == 'backoff talker delay_seconds=0.5 reason="exit 1"'
    assert (draining["service"], draining["pid"]) == ("coditect-start", os.getpid())
    assert draining["message"] == "draining timeout_seconds=25.0"


def test_the_console_format_stays_readable() -> None:
    """On a person's console an event is structlog's one coloured line, not JSON, and a
    child's line has its `name |` prefix; held events come first there too."""
    with _stdout("console") as (console, out):
        events = EventLog(console)
        events("spawned", service="talker", pid=42)
        console.child_lines("talker", "stdout", 42, b"hello\n")
        events.configure()
    spawned, child = (line.decode() for line in out.lines)
    assert "spawned" in spawned and "talker" in spawned and not spawned.startswith("{")
    assert "stream" not in spawned  # the JSON schema's keys are for machines
    assert "talker" in child and "|" in child and child.endswith(" hello")


def test_a_place_never_filled_does_not_hold_back_the_lines_after_it() -> None:
    """An engine that ends before structlog came (its held events never written) still gives
    stdout the children's lines queued behind them when it lets go of the console."""
    with _stdout("json") as (console, out):
        console.reserve()
        console.child_lines("talker", "stdout", 42, b"last words\n")
        assert out.now() == b""
        console.detach()
    assert [json.loads(line)["message"] for line in out.lines] == ["last words"]
