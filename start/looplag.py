"""How late the engine's event loop is, measured when someone asks (/livez, /metrics, podctl
status) rather than on a heartbeat of its own: an idle PID 1 then wakes only for its probes,
the catalogue watcher and what happens.

Each reading arms one timer, LOOKOUT later, unless one is already armed; the lag is how late
the last such timer ran. A timer that is overdue when the next reading comes (the loop was
held up in between) counts as late by as much already. So a loop stuck for seconds fails the
next /livez after it, as the heartbeat did, at the cost of one wake-up per reading.
"""

from __future__ import annotations

import asyncio

LOOKOUT = 1.0  # seconds between a reading and the timer it arms


class LoopLag:
    def __init__(self, loop: asyncio.AbstractEventLoop, lookout: float = LOOKOUT) -> None:
        self.loop = loop
        self.lookout = lookout
        self._lag = 0.0
        self._expected: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def read(self) -> float:
        """Seconds the loop was late on its last timer (or is late on the pending one)."""
        now = self.loop.time()
        if self._expected is None:
            self._expected = now + self.lookout
            self._timer = self.loop.call_at(self._expected, self._arrived)
            return self._lag
        return max(self._lag, now - self._expected)

    @property
    def pending(self) -> bool:
        """Whether a timer is armed (only after a reading, until it has run)."""
        return self._timer is not None

    def _arrived(self) -> None:
        if self._expected is not None:
            self._lag = max(0.0, self.loop.time() - self._expected)
        self._expected = None
        self._timer = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._expected = self._timer = None
