"""The boot-speed layer's timers (start.boot, start.looplag): nothing armed while nothing
happens, a heap trim after work, loop lag measured when asked; and an idle engine's PID 1
asleep between real events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from start.boot import FLOOD_BYTES, HeapTrim
from start.looplag import LoopLag
from tests.support import RunningPod, write_catalogue

DEADLINE = 5.0


class Trims:
    """A stand-in for glibc's malloc_trim that counts its calls (failure injection's kind)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, _pad: int) -> int:
        self.calls += 1
        return 1


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll `predicate` on the running loop until true; fail the test after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_heap_trim_follows_work_once_and_nothing_is_armed_meanwhile() -> None:
    """Before glibc is known nothing arms; then two pieces of work arm one trim, and once it
    has run nothing is armed until more work comes."""
    heap = HeapTrim(asyncio.get_running_loop(), delay=0.05)
    heap.after_work()
    assert not heap.pending, "armed before the boot's memory release enabled it"
    trims = Trims()
    heap.enable(trims)
    assert not heap.pending
    heap.after_work()
    heap.after_work()
    await until(lambda: trims.calls == 1, "the trim after work")
    assert not heap.pending
    assert trims.calls == 1


async def test_only_a_flood_of_output_arms_a_trim_and_its_tail_is_trimmed_too() -> None:
    """Children's output below FLOOD_BYTES is no work; a flood is, and so is what follows it
    until a trim's delay passes without output."""
    heap = HeapTrim(asyncio.get_running_loop(), delay=0.05)
    trims = Trims()
    heap.enable(trims)
    heap.after_output(FLOOD_BYTES // 2)
    assert not heap.pending
    heap.after_output(FLOOD_BYTES // 2)
    assert heap.pending
    heap.after_output(100)  # the flood goes on while the trim waits
    await until(lambda: trims.calls == 1, "the flood's trim")
    heap.after_output(100)  # its tail
    assert heap.pending
    await until(lambda: trims.calls == 2, "the tail's trim")
    heap.after_output(100)  # after a quiet delay: a line, not a flood
    assert not heap.pending


async def test_loop_lag_arms_one_timer_per_reading_and_sees_a_blocked_loop() -> None:
    """A reading arms one timer; a loop held up past it reads as late at once, and the lag
    stays known after the timer ran; nothing is armed between readings."""
    lag = LoopLag(asyncio.get_running_loop(), lookout=0.05)
    assert not lag.pending
    assert lag.read() == 0.0
    assert lag.pending
    time.sleep(0.3)  # noqa: ASYNC251 - the failure injected: the loop blocked by a stuck call
    assert lag.read() >= 0.2
    await until(lambda: not lag.pending, "the lag timer")
    assert lag.read() >= 0.2
    lag.close()
    assert not lag.pending


def test_an_idle_engine_sleeps_between_real_events(tmp_path: Path) -> None:
    """With one service and no probes, PID 1's event loop is not woken over four quiet seconds
    after its boot (a heartbeat or a periodic trim would wake it every second or five)."""
    catalogue = write_catalogue(tmp_path / "cat", {"quiet": {"command": "sleep 1000",
                                                             "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home", pid1=True)
    try:
        pod.wait_event("watching_catalogue", 15)
        status = Path(f"/proc/{pod.engine_pid}/status")

        def switches() -> int:
            line = next(line for line in status.read_text().splitlines()
                        if line.startswith("voluntary_ctxt_switches:"))
            return int(line.split()[1])

        time.sleep(0.5)  # the boot's last writes out of the way (its memory release is at 10 s)
        before = switches()
        time.sleep(4)  # the measurement itself: nothing is asked of the pod meanwhile
        woken = switches() - before
        assert woken <= 1, f"PID 1 woke {woken} times in 4 idle seconds\n{pod.tail()}"
    finally:
        pod.stop()
