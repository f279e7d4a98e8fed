"""The engine's events for those who follow them over the control socket (`podctl events -f`).

The engine hands every event it emits to `EventFeed.publish`, on its loop, at the moment it
happens (before structlog is even loaded at boot). The feed keeps the last HISTORY events for a
newcomer, and each follower gets a queue of its own bounded at QUEUE_LIMIT lines: publishing is
an append, never a wait, so a reader that does not read cannot hold PID 1. A follower that falls
that far behind is dropped: it gets one last line saying so and its stream ends.

It also remembers, for `podctl timeline`, when each service was first spawned and first ready
since the boot: the boot's critical chain, kept however many restarts come after.

The standard library only: the engine makes the feed before its first spawn.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

HISTORY = 200  # events a newcomer gets before the ones that follow
QUEUE_LIMIT = 1000  # lines a follower may be behind before it is dropped


def encode(event: Mapping[str, Any]) -> bytes:
    """One JSON line; what is not JSON (a path, an enum) is written as its text."""
    return json.dumps(event, default=str, ensure_ascii=False).encode() + b"\n"


def _epoch(ts: object) -> float | None:
    """An event's `ts` (ISO 8601, `Z`) as seconds since the epoch."""
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Follower:
    """One reader's queue: lines waiting to be written, and whether it was dropped."""

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self.lines: deque[bytes] = deque()
        self.limit = limit
        self.dropped = False
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()  # everything offered has been handed to the socket
        self.idle.set()

    def offer(self, line: bytes) -> None:
        if self.dropped:
            return
        if len(self.lines) >= self.limit:
            self.dropped = True  # what it has is still written, then the last line
        else:
            self.lines.append(line)
        self.idle.clear()
        self.wakeup.set()

    def take(self) -> list[bytes]:
        lines = list(self.lines)
        self.lines.clear()
        self.wakeup.clear()
        return lines

    def written(self) -> None:
        """What was taken is in the socket's hands now."""
        if not self.lines:
            self.idle.set()


class EventFeed:
    """Fan-out of the engine's events to followers, and the boot's first spawns and readies."""

    def __init__(self, history: int = HISTORY, queue_limit: int = QUEUE_LIMIT) -> None:
        self._history: deque[bytes] = deque(maxlen=history)
        self._followers: set[Follower] = set()
        self._queue_limit = queue_limit
        self.first_spawned: dict[str, float] = {}  # service → epoch seconds
        self.first_ready: dict[str, float] = {}

    def publish(self, event: str, level: str, fields: Mapping[str, Any]) -> None:
        record = {"ts": fields.get("ts"), "event": event, "level": level,
                  **{k: v for k, v in fields.items() if k != "ts"}}
        self._remember(event, record)
        line = encode(record)
        self._history.append(line)
        for follower in self._followers:
            follower.offer(line)

    def _remember(self, event: str, record: Mapping[str, Any]) -> None:
        service = record.get("service")
        at = _epoch(record.get("ts"))
        if not isinstance(service, str) or at is None:
            return
        if event == "spawned":
            self.first_spawned.setdefault(service, at)
        elif event == "ready":
            self.first_ready.setdefault(service, at)

    async def flush(self, timeout: float) -> None:
        """Wait, at most `timeout` seconds, until every follower has been handed what was
        published: the drain's notice reaches them before the drain stops anything, and a
        reader that does not read delays it by `timeout` at most."""
        waits = [asyncio.ensure_future(f.idle.wait()) for f in self._followers
                 if not f.idle.is_set()]
        if waits:
            await asyncio.wait(waits, timeout=timeout)
            for wait in waits:
                wait.cancel()

    def recent(self) -> list[bytes]:
        return list(self._history)

    def follow(self) -> Follower:
        follower = Follower(self._queue_limit)
        self._followers.add(follower)
        return follower

    def leave(self, follower: Follower) -> None:
        self._followers.discard(follower)

    @property
    def followers(self) -> int:
        return len(self._followers)
