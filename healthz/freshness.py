"""When a probe's latest result is too old to count: one rule for the engine's readiness and
the probe loop's own verdict. Imports nothing, so both can use it."""

from __future__ import annotations

STALE_AFTER_INTERVALS = 3  # a result older than this many intervals counts as failed (a hung probe)


def is_stale(at: float, interval: float, now: float) -> bool:
    """True when a result taken `at` is older than three probe intervals at `now`."""
    return now - at > STALE_AFTER_INTERVALS * interval
