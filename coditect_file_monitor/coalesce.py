"""Bursts on one path become one event; the queue between watchdog and the worker is bounded.

A change waits here until its path has been quiet for `quiet` seconds (an editor's save, a
compiler writing in several `write()` calls, touch-then-write: one event), but never longer
than `max_hold` from its first observation, so a file written without pause is still reported.

What merges: created/modified into a pending created or modified (the first kind wins), modified
into a pending move (the move's destination is measured later anyway), deleted into deleted.
Anything else on a pending path (deleted after created, created after deleted, a move) is a
real transition: the pending entry is released first and the new change queued after it, so
no transition is ever hidden. Releasing is always of a prefix (pending entries are kept in
order of their latest observation), so the output never reorders two paths; a directory moved
or deleted releases everything, since its children are pending under their old paths.

Capacity counts pending and released entries together. When it is full a new change is dropped
and counted; merging into an existing entry never needs room, so a storm on few paths loses
nothing.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from coditect_file_monitor.events import Change, Kind

_MERGES: frozenset[tuple[Kind, Kind]] = frozenset(
    {
        (Kind.CREATED, Kind.CREATED),
        (Kind.CREATED, Kind.MODIFIED),
        (Kind.MODIFIED, Kind.MODIFIED),
        (Kind.MODIFIED, Kind.CREATED),
        (Kind.MOVED, Kind.MODIFIED),
        (Kind.DELETED, Kind.DELETED),
    }
)


@dataclass(slots=True)
class _Pending:
    change: Change
    first: float  # monotonic, first observation
    last: float  # monotonic, latest observation


class Coalescer:
    """Thread-safe: watchdog's dispatcher calls `offer`, the worker calls `take`."""

    def __init__(
        self,
        capacity: int,
        *,
        quiet: float = 0.1,
        max_hold: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.quiet = quiet
        self.max_hold = max_hold
        self._clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._released: deque[Change] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.coalesced = 0

    @property
    def depth(self) -> int:
        return len(self._pending) + len(self._released)

    def offer(self, change: Change) -> bool:
        """Queue or merge `change`; False when it was dropped for lack of room.

        After `close` (the observer is stopped by then) changes are ignored."""
        now = self._clock()
        with self._cond:
            if self._closed:
                return True
            key = change.dest if change.kind is Kind.MOVED and change.dest else change.path
            entry = self._pending.get(key)
            if entry is not None and (entry.change.kind, change.kind) in _MERGES:
                if now - entry.first < self.max_hold:
                    entry.last = now
                    entry.change.observed_at = change.observed_at
                    self._pending.move_to_end(key)
                    self.coalesced += 1
                    return True
                # Held long enough: report what we have, keep collecting under a new entry.
                self._release_through(key)
            elif change.is_dir and change.kind in (Kind.DELETED, Kind.MOVED):
                self._release_all()
            else:
                self._release_through(key)
                if change.kind is Kind.MOVED:
                    self._release_through(change.path)
            if self.depth >= self.capacity:
                self.dropped += 1
                return False
            self._pending[key] = _Pending(change, now, now)
            if len(self._pending) == 1 or self._released:
                self._cond.notify()
            return True

    def take(self, limit: int) -> list[Change]:
        """Block until changes are due, then return up to `limit` of them in order.

        An empty list means closed and drained: the worker is done.
        """
        with self._cond:
            while True:
                now = self._clock()
                while self._pending:
                    first = next(iter(self._pending.values()))
                    if not self._closed and first.last + self.quiet > now:
                        break
                    self._released.append(self._pending.popitem(last=False)[1].change)
                if self._released:
                    n = min(limit, len(self._released))
                    return [self._released.popleft() for _ in range(n)]
                if self._closed:
                    return []
                timeout = None
                if self._pending:
                    first = next(iter(self._pending.values()))
                    timeout = max(0.0, first.last + self.quiet - now)
                self._cond.wait(timeout)

    def close(self) -> None:
        """No more offers; everything pending is due now (the shutdown flush)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _release_through(self, key: str) -> None:
        if key not in self._pending:
            return
        while self._pending:
            path, entry = self._pending.popitem(last=False)
            self._released.append(entry.change)
            if path == key:
                return

    def _release_all(self) -> None:
        while self._pending:
            self._released.append(self._pending.popitem(last=False)[1].change)
