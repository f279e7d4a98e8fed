"""The file monitor's pure parts with a scripted clock: coalescing, ignore rules, rotation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coditect_file_monitor.checksum import NOT_REGULAR, sha256_of
from coditect_file_monitor.coalesce import Coalescer
from coditect_file_monitor.events import Change, Event, Kind
from coditect_file_monitor.paths import PathRules
from coditect_file_monitor.sink import RotatingFileSink


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def change(kind: Kind, path: str, *, is_dir: bool = False, dest: str | None = None) -> Change:
    return Change(kind, path, is_dir, 0.0, dest)


def drain(q: Coalescer, clock: Clock) -> list[tuple[str, str]]:
    """Everything due after the quiet window has passed, as (kind, path)."""
    clock.now += q.quiet + 0.001
    out: list[tuple[str, str]] = []
    while q.depth:
        out += [(str(c.kind), c.dest or c.path) for c in q.take(1000)]
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_burst_on_one_path_is_one_change(clock: Clock) -> None:
    """created then modified many times: one `created`."""
    q = Coalescer(10, quiet=0.1, clock=clock)
    q.offer(change(Kind.CREATED, "a"))
    for _ in range(50):
        clock.now += 0.01
        q.offer(change(Kind.MODIFIED, "a"))
    assert drain(q, clock) == [("created", "a")]
    assert q.coalesced == 50


def test_transitions_are_never_hidden(clock: Clock) -> None:
    """created→deleted→created on one path stays three changes, in order."""
    q = Coalescer(10, quiet=0.1, clock=clock)
    for kind in (Kind.CREATED, Kind.MODIFIED, Kind.DELETED, Kind.CREATED):
        q.offer(change(kind, "a"))
    assert drain(q, clock) == [("created", "a"), ("deleted", "a"), ("created", "a")]


def test_releasing_a_path_releases_everything_observed_before_it(clock: Clock) -> None:
    """Output order follows the latest observation: no path overtakes an earlier one."""
    q = Coalescer(10, quiet=0.1, clock=clock)
    q.offer(change(Kind.CREATED, "first"))
    q.offer(change(Kind.CREATED, "second"))
    q.offer(change(Kind.DELETED, "second"))
    assert [str(c.path) for c in q.take(10)] == ["first", "second"]
    assert drain(q, clock) == [("deleted", "second")]


def test_a_directory_deleted_releases_its_pending_children_first(clock: Clock) -> None:
    """Children pending under a deleted directory are written before its deletion."""
    q = Coalescer(10, quiet=0.1, clock=clock)
    q.offer(change(Kind.CREATED, "d", is_dir=True))
    q.offer(change(Kind.CREATED, "d/f"))
    q.offer(change(Kind.DELETED, "d/f"))
    q.offer(change(Kind.DELETED, "d", is_dir=True))
    assert drain(q, clock) == [
        ("created", "d"), ("created", "d/f"), ("deleted", "d/f"), ("deleted", "d")]


def test_a_move_is_keyed_by_its_destination(clock: Clock) -> None:
    """modified after a move merges into the move; the source's pending change goes first."""
    q = Coalescer(10, quiet=0.1, clock=clock)
    q.offer(change(Kind.CREATED, "tmp"))
    q.offer(change(Kind.MOVED, "tmp", dest="final"))
    q.offer(change(Kind.MODIFIED, "final"))
    assert drain(q, clock) == [("created", "tmp"), ("moved", "final")]


def test_a_path_written_without_pause_is_reported_every_max_hold(clock: Clock) -> None:
    """A file never quiet (a log) still yields an event per `max_hold`."""
    q = Coalescer(10, quiet=0.1, max_hold=1.0, clock=clock)
    q.offer(change(Kind.MODIFIED, "log"))
    for _ in range(25):
        clock.now += 0.05
        q.offer(change(Kind.MODIFIED, "log"))
    assert drain(q, clock) == [("modified", "log")] * 2


def test_a_full_queue_drops_new_paths_but_still_merges(clock: Clock) -> None:
    """Full: a new path is dropped and counted; a change on a queued path still merges."""
    q = Coalescer(2, quiet=0.1, clock=clock)
    assert q.offer(change(Kind.CREATED, "a"))
    assert q.offer(change(Kind.CREATED, "b"))
    assert not q.offer(change(Kind.CREATED, "c"))
    assert q.offer(change(Kind.MODIFIED, "a"))
    assert (q.dropped, q.depth) == (1, 2)
    assert drain(q, clock) == [("created", "b"), ("created", "a")]  # by latest observation


def test_close_makes_everything_due_and_then_ends_the_worker(clock: Clock) -> None:
    """The shutdown flush: pending changes are due at once, then `take` says done."""
    q = Coalescer(10, quiet=60, clock=clock)
    q.offer(change(Kind.CREATED, "a"))
    q.close()
    assert [c.path for c in q.take(10)] == ["a"]
    assert q.take(10) == []


def test_ignore_rules_and_own_files() -> None:
    """Components match whole names or globs; our own files and their rotations never pass."""
    rules = PathRules("/ws", [".git", "*.swp", ""], ["/ws/logs/events.log"])
    assert rules.relative("/ws/src/main.py") == "src/main.py"
    assert rules.relative("/ws/a/.git/HEAD") is None
    assert rules.relative("/ws/a/.github/x") == "a/.github/x"
    assert rules.relative("/ws/x.swp") is None
    assert rules.relative("/ws/logs/events.log") is None
    assert rules.relative("/ws/logs/events.log.7") is None
    assert rules.relative("/ws/logs/other.log") == "logs/other.log"
    assert rules.relative("/elsewhere/f") is None
    assert rules.relative("/wsx/f") is None


def test_rotation_splits_between_lines(tmp_path: Path) -> None:
    """Every line whole in exactly one file, none over the limit, the oldest dropped."""
    sink = RotatingFileSink(str(tmp_path / "e.log"), max_bytes=25, backups=2)
    for n in range(6):
        sink.write(f"line-{n}-" + "x" * 8)  # 16 bytes with the newline
    sink.close()
    assert (tmp_path / "e.log").read_text() == "line-5-xxxxxxxx\n"
    assert (tmp_path / "e.log.1").read_text() == "line-4-xxxxxxxx\n"
    assert (tmp_path / "e.log.2").read_text() == "line-3-xxxxxxxx\n"
    assert not (tmp_path / "e.log.3").exists()


def test_rotation_without_a_backup_is_refused(tmp_path: Path) -> None:
    """Rotating into no backup would truncate events away."""
    with pytest.raises(ValueError, match="backup"):
        RotatingFileSink(str(tmp_path / "e.log"), max_bytes=10, backups=0)


def test_a_fifo_is_never_read(tmp_path: Path) -> None:
    """Hashing a FIFO would block the worker: it is refused instead."""
    os.mkfifo(tmp_path / "pipe")
    assert sha256_of(str(tmp_path / "pipe")).error == NOT_REGULAR


def test_the_wire_format() -> None:
    """Compact JSON; `sha256` only with checksums; RFC 3339 UTC with Z."""
    event = Event.from_change(change(Kind.MOVED, "a", dest="b"), size=3, sha256="00")
    assert event.to_json(checksums=False).startswith('{"id":')
    assert '"sha256"' not in event.to_json(checksums=False)
    assert '"dest_path":"b"' in event.to_json(checksums=True)
    assert event.timestamp_utc == "1970-01-01T00:00:00.000000Z"
    assert "a -> b" in event.to_text(checksums=True)
