"""The faults: what is done to a child, how soon it must be ready again (derived from its
catalogue entry), and how soon it was.

One fault at a time, each followed by a wait for the victim to be ready again: a bound is
meaningful only when it is the one fault in play. The bound of a fault is the engine's own
policy for it (restart backoff, startsecs, probe interval and timeout) plus `SLACK`, the time a
process needs to start on a loaded two-core machine.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from soak.pod import SoakPod
from start.catalogue import ServiceSpec
from start.lifecycle import STABLE_RUN, backoff_delay

SLACK = 5.0  # seconds: a Python stand-in's start, and the leftover wait, on a busy machine
CRASH_RUN = 0.3 + 1.0  # seconds a crash-looping run takes: its 0.3 s and its start
KINDS = {"kill-9": 3, "sigterm": 2, "stop-cont": 2, "crash-loop": 1, "flood": 1, "stray": 1}
CRASHER = "soak-crasher"
FLOODER = "soak-flooder"
FLOOD_SECONDS = 2.0  # the flooder's --flood-seconds
STRAY_FILE = "soak-stray"  # in $CODITECT_RUN: the crasher writes its stray's pid there


@dataclass
class Fault:
    kind: str
    service: str
    at: float  # seconds since the soak began
    bound: float  # seconds: ready again within this
    recovered_in: float | None = None  # seconds; None: not ready again (see `note`)
    detail: str = ""
    stray_left: bool = False  # `stray`: the killed run's setsid grandchild outlived it

    @property
    def within_bound(self) -> bool:
        return self.recovered_in is not None and self.recovered_in <= self.bound

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "within_bound": self.within_bound}


class Injector:
    """Picks and applies faults at random (seeded), and times each recovery."""

    def __init__(self, pod: SoakPod, specs: dict[str, ServiceSpec], crash_file: Path,
                 seed: int, began: float) -> None:
        self.pod = pod
        self.specs = specs
        self.crash_file = crash_file
        self.stray_file = crash_file.with_name(STRAY_FILE)
        self.random = random.Random(seed)
        self.began = began
        self.faults: list[Fault] = []
        # The engine's failures-in-a-row as our faults drive it (reset by a stable run).
        self._in_a_row: dict[str, int] = {}
        # When our faults made each service restart, for those with a restart_budget.
        self._restarted_at: dict[str, list[float]] = {}

    # -- choosing -----------------------------------------------------------------------------

    def next_fault(self, kind: str | None = None) -> Fault | None:
        """Apply one fault (of `kind`, or drawn at random) and wait until its victim is ready
        again or twice its bound has passed. None when no victim is in a state to take it."""
        status = self.pod.status()
        running = {name: s for name, s in status.items()
                   if s["state"] == "running" and s["ready"] and s["pid"]}
        kinds = [kind] if kind else self.random.choices(list(KINDS), list(KINDS.values()))
        chosen = kinds[0]
        if chosen == "stray" and CRASHER not in running:
            if kind is not None:
                return None
            chosen = "kill-9"
        if chosen == "crash-loop":
            crasher = running.get(CRASHER)
            # A crash loop right after the last would make the engine's counters carry over.
            if crasher is None or (crasher["uptime_seconds"] or 0) < STABLE_RUN:
                chosen = "kill-9" if kind is None else chosen
                if kind is not None:
                    return None
        if chosen == "flood" and FLOODER not in running:
            return None
        if not running:
            return None
        if chosen in ("crash-loop", "flood", "stray"):
            name = FLOODER if chosen == "flood" else CRASHER
        else:
            victims = sorted(running) if chosen == "stop-cont" else [
                name for name in sorted(running) if self._within_budget(name)]
            if not victims:
                return None
            name = self.random.choice(victims)
        return self._apply(chosen, name, running[name])

    def _within_budget(self, name: str) -> bool:
        """Whether one more restart keeps `name` inside its restart_budget, with one to spare.
        A critical service past its budget makes /livez fail on purpose (the kubelet is to
        replace the container): that is the engine doing its job, not a fault surviving it, so
        the soak stays inside every budget and then requires /livez to be 200 throughout."""
        budget = self.specs[name].health.restart_budget
        if budget is None:
            return True
        now = time.monotonic()
        recent = [t for t in self._restarted_at.get(name, []) if now - t < budget.window]
        self._restarted_at[name] = recent
        return len(recent) + 1 < budget.count

    # -- applying -----------------------------------------------------------------------------

    def _apply(self, kind: str, name: str, status: dict[str, Any]) -> Fault | None:
        spec = self.specs[name]
        pid = self.pod.host_pid(int(status["pid"]))
        if pid is None:
            return None
        at = time.monotonic()
        fault = Fault(kind, name, round(at - self.began, 3), 0.0)
        new_pid = True
        stray: psutil.Process | None = None
        if kind == "stray":
            stray = self._leave_stray(pid)
            if stray is None:
                return None
            kind = "kill-9"  # what happens to the victim; the stray is checked after
        if kind in ("kill-9", "sigterm"):
            fault.bound = self._restart_bound(name, spec, status, crashes=0)
            self._restarted_at.setdefault(name, []).append(at)
            os.kill(pid, signal.SIGKILL if kind == "kill-9" else signal.SIGTERM)
        elif kind == "crash-loop":
            crashes = self.random.randint(2, 4)
            self.crash_file.write_text(f"{crashes}\n")
            fault.detail = f"{crashes} crashed starts"
            fault.bound = self._restart_bound(name, spec, status, crashes=crashes)
            os.kill(pid, signal.SIGKILL)
        elif kind == "stop-cont":
            pause = round(self.random.uniform(0.3, 2.0), 2)
            health = spec.health
            # Stopped for less than `failures` probe periods: no restart is due; the worst is
            # one failed probe, which `failures` > 1 absorbs.
            fault.bound = round(pause + health.timeout + SLACK, 3)
            fault.detail = f"stopped {pause:g}s"
            os.kill(pid, signal.SIGSTOP)
            time.sleep(pause)  # the fault itself: the process stays stopped this long
            os.kill(pid, signal.SIGCONT)
            new_pid = False
        else:  # flood
            fault.bound = round(FLOOD_SECONDS + SLACK, 3)
            fault.detail = f"SIGUSR1: {FLOOD_SECONDS:g}s of lines as fast as the pipe takes"
            os.kill(pid, signal.SIGUSR1)
            time.sleep(FLOOD_SECONDS)  # the fault lasts this long: then it must still be up
            new_pid = False
        if stray is not None:
            gone_in = self._gone_in(stray, at, SLACK)
            fault.stray_left = gone_in is None
            fault.detail = ("its setsid grandchild LEFT behind" if gone_in is None else
                            f"its setsid grandchild gone {gone_in * 1000:.0f} ms after the kill")
        fault.recovered_in = self._wait_ready(name, int(status["pid"]), new_pid, at,
                                              2 * fault.bound)
        if fault.recovered_in is None:
            fault.detail += "; not ready again"
        self.faults.append(fault)
        return fault

    def _leave_stray(self, victim: int) -> psutil.Process | None:
        """SIGUSR2 to the crasher: it starts a `sleep` in a session of its own and writes its
        pid (inside the namespace); the process, held by pid and start time, or None."""
        self.stray_file.unlink(missing_ok=True)
        os.kill(victim, signal.SIGUSR2)
        deadline = time.monotonic() + SLACK
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                host = self.pod.host_pid(int(self.stray_file.read_text()))
                if host is not None:
                    return psutil.Process(host)
            time.sleep(0.05)  # polling the file with a deadline
        return None

    @staticmethod
    def _gone_in(process: psutil.Process, since: float, limit: float) -> float | None:
        """Seconds from `since` until `process` (that very one: is_running checks its start
        time) ended; None if it was still there `limit` seconds later."""
        deadline = since + limit
        while True:
            try:
                if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                    return time.monotonic() - since
            except psutil.NoSuchProcess:
                return time.monotonic() - since
            if time.monotonic() > deadline:
                return None
            time.sleep(0.005)  # polling with a deadline, finely: the figure is reported

    def _restart_bound(self, name: str, spec: ServiceSpec, status: dict[str, Any],
                       crashes: int) -> float:
        """Backoff before each respawn (as the engine counts failures in a row), each crashed
        run, then startsecs when readiness is "running" (no readiness probe)."""
        stable = (status["uptime_seconds"] or 0) >= max(STABLE_RUN, spec.startsecs)
        first = 1 if stable else self._in_a_row.get(name, 0) + 1
        self._in_a_row[name] = first + crashes
        waits = sum(backoff_delay(n) for n in range(first, first + crashes + 1))
        start = spec.startsecs if spec.health.ready.kind == "none" else 0.0
        return round(waits + crashes * CRASH_RUN + start + SLACK, 3)

    def _wait_ready(self, name: str, old_pid: int, new_pid: bool, since: float,
                    limit: float) -> float | None:
        deadline = since + limit
        while time.monotonic() < deadline:
            try:
                svc = self.pod.status()[name]
            except Exception:  # the socket busy or the pod slow: ask again until the deadline
                svc = {}
            if (svc.get("ready")
                    and (not new_pid or svc.get("pid") != old_pid)):
                return round(time.monotonic() - since, 3)
            time.sleep(0.05)
        return None
