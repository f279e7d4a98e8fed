"""A SIGTERM in the pod's first second, while the boot is in progress: PID 1 drains with exit 0
and prints nothing but its own events (no "_GatheringFuture exception was never retrieved").

Two clocks, both real signals to a real PID 1 (`unshare --pid --fork`):
- from the first line of ours (the handler that keeps stop signals is in place, as
  /proc/PID/status's SigCgt shows): then nothing is lost, whatever the delay;
- from the exec, with the stop signals blocked by the launcher: the kernel holds the signal
  pending through Python's own start-up (it would drop it otherwise: PID 1, no handler yet), and
  the engine takes it once its handler is in place (start/stopsignals.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RunningPod, wait_for, write_catalogue

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="a new PID namespace needs root and unshare")
DELAYS = (0.0, 0.02, 0.05, 0.1, 0.3)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def booting_catalogue(directory: Path) -> Path:
    """A boot that is still in progress for seconds: a critical service whose readiness never
    comes, one waiting for it, one that needs nothing."""
    return write_catalogue(directory, {
        "api": {"command": "/bin/sleep 1000", "startsecs": "0"},
        "web": {"command": "/bin/sleep 1000", "startsecs": "0"},
        "idle": {"command": "/bin/sleep 1000", "startsecs": "0"},
    }, {"api": {"ready": "exec:/bin/false", "interval": "200ms", "critical": "true"},
        "web": {"after": "api"}, "idle": {"critical": "false"}})


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """What a launcher can do for PID 1: exec it with the stop signals blocked (the child, and
    the threads started meanwhile, inherit the mask; this thread gets its own back)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def assert_drained_quietly(pod: RunningPod) -> None:
    code = pod.wait(30)
    assert code == 0, pod.tail(40)
    assert all(isinstance(json.loads(line), dict) for line in pod.raw), pod.tail(40)
    assert "".join(pod.stderr) == "", pod.tail(40)
    assert [e["signal"] for e in pod.events("signal")] == ["SIGTERM"]
    assert pod.events("exit")[-1]["code"] == 0


@needs_root
@pytest.mark.parametrize("delay", DELAYS)
def test_from_our_first_line_an_early_sigterm_drains(tmp_path: Path, delay: float) -> None:
    pod = RunningPod(booting_catalogue(tmp_path / "cat"), tmp_path / "home", pid1=True)
    try:
        engine = pod.engine_pid
        wait_for(lambda: catches_sigterm(engine), 20, "the engine's first line")
        time.sleep(delay)  # failure injection: the delay is what is tested, nothing is awaited
        os.kill(engine, signal.SIGTERM)
        assert_drained_quietly(pod)
    finally:
        pod.stop()


@needs_root
@pytest.mark.parametrize("delay", DELAYS)
def test_from_the_exec_a_blocked_sigterm_is_kept(tmp_path: Path, delay: float) -> None:
    with stop_signals_blocked():
        pod = RunningPod(booting_catalogue(tmp_path / "cat"), tmp_path / "home", pid1=True)
    try:
        engine = pod.engine_pid
        time.sleep(delay)  # failure injection, as above
        os.kill(engine, signal.SIGTERM)
        assert_drained_quietly(pod)
        assert pod.events("booted"), pod.tail()
    finally:
        pod.stop()
