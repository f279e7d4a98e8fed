"""Waiting until something holds, under a deadline: the one polling helper of the tests, the
benchmarks and the soak (`wait_for` in a thread, `until` on an event loop, and `holds_for` for
the opposite: that something keeps holding)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

What = str | Callable[[], str]  # a callable is asked only on failure (e.g. a pod's last lines)


class TimedOut(TimeoutError, AssertionError):
    """The deadline came first: a TimeoutError to the harnesses, and to pytest a failed
    assertion (a test failure, not an error in the test)."""


def _timed_out(timeout: float, what: What) -> TimedOut:
    described = what() if callable(what) else what
    return TimedOut(f"timed out after {timeout:g}s waiting for {described}")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: What = "condition",
             interval: float = 0.01) -> Any:
    """Poll `predicate` every `interval` s until it is truthy, and return its value; TimedOut
    naming `what` once `timeout` s have passed."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what)
        time.sleep(interval)
    return value


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: What = "condition",
                interval: float = 0.01) -> Any:
    """`wait_for` without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what)
        await asyncio.sleep(interval)
    return value


def holds_for(predicate: Callable[[], Any], seconds: float, what: str,
              interval: float = 0.01) -> None:
    """Check that `predicate` stays truthy for `seconds` (that something does not happen);
    fail as soon as it is not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} no longer held"
        time.sleep(interval)
    assert predicate(), f"{what} no longer held"
