"""CPU and memory of a service's whole process tree, read with psutil.

A service is more than its main pid: nginx has workers, Theia forks node helpers, an `exec:`
wrapper has its command. What a person or Prometheus wants to know is the sum over the tree.
Processes come and go between two reads, so every psutil call tolerates a vanished process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

MAP_TTL = 0.5  # seconds one scan of who-is-whose-parent serves; trees rarely change faster
USAGE_TTL = 1.0  # seconds one reading of a tree's RSS and CPU serves

# Errors psutil raises for a process that ended, turned zombie, or is not ours to read.
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """Resource use summed over a process tree at one moment."""

    processes: int
    rss_bytes: int
    cpu_seconds: float  # user + system, including reaped children of each member
    cpu_percent: float  # since the previous read of the same processes; 0.0 the first time


class ProcessTree:
    """Reads process trees, keeping one `psutil.Process` per live pid between reads.

    psutil measures `cpu_percent` against the previous call on the same object, so the objects
    are kept: a second `/v1/status` gives a meaningful figure. Entries for processes that have
    ended are dropped by :meth:`forget_dead`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._known: dict[int, psutil.Process] = {}
        self._clock = clock
        self._children: dict[int, list[int]] = {}
        self._children_at = -MAP_TTL
        self._usage: dict[tuple[int, ...], tuple[float, TreeUsage | None]] = {}

    def usage(self, root_pids: Iterable[int]) -> TreeUsage | None:
        """The tree under `root_pids` (roots and their descendants); None if none is alive.

        A reading is reused for USAGE_TTL: anyone may scrape /metrics, and a flood of scrapes
        must not turn into a flood of /proc reads on the engine's loop."""
        key = tuple(root_pids)
        now = self._clock()
        cached = self._usage.get(key)
        if cached is not None and now - cached[0] < USAGE_TTL:
            return cached[1]
        reading = self._read(key)
        if len(self._usage) > 1024:  # pids come and go; keep the cache from growing forever
            self._usage.clear()
        self._usage[key] = (now, reading)
        return reading

    def _read(self, root_pids: tuple[int, ...]) -> TreeUsage | None:
        members = self._members(root_pids)
        if not members:
            return None
        rss = 0
        cpu_seconds = 0.0
        cpu_percent = 0.0
        alive = 0
        for proc in members:
            try:
                with proc.oneshot():
                    proc_rss = proc.memory_info().rss
                    times = proc.cpu_times()
                    proc_percent = proc.cpu_percent(interval=None)
            except _GONE:
                continue  # ended between listing and reading: it no longer uses anything
            alive += 1
            rss += proc_rss
            cpu_percent += proc_percent
            cpu_seconds += times.user + times.system + times.children_user + times.children_system
        if alive == 0:
            return None
        return TreeUsage(alive, rss, cpu_seconds, cpu_percent)

    def forget_dead(self) -> None:
        """Drop cached processes that have ended, so the cache follows the live pods' trees."""
        self._known = {pid: p for pid, p in self._known.items() if p.is_running()}

    def _members(self, root_pids: Iterable[int]) -> list[psutil.Process]:
        seen: dict[int, psutil.Process] = {}
        for pid in root_pids:
            root = self._cached(pid)
            if root is None or pid in seen:
                continue
            seen[pid] = root
            children = self._children_map()
            pending = list(children.get(pid, ()))
            while pending:
                child_pid = pending.pop()
                if child_pid in seen:
                    continue
                child = self._cached(child_pid)
                if child is not None:
                    seen[child_pid] = child
                    pending.extend(children.get(child_pid, ()))
        return list(seen.values())

    def _children_map(self) -> dict[int, list[int]]:
        """Parent pid -> child pids, from one pass over /proc shared by every tree read in the
        same moment (a status of five services would otherwise scan /proc five times)."""
        now = self._clock()
        if now - self._children_at >= MAP_TTL:
            children: dict[int, list[int]] = {}
            for proc in psutil.process_iter(["ppid"]):
                ppid = proc.info.get("ppid")
                if ppid is not None:
                    children.setdefault(ppid, []).append(proc.pid)
            self._children, self._children_at = children, now
        return self._children

    def _cached(self, pid: int) -> psutil.Process | None:
        proc = self._known.get(pid)
        # is_running() also compares the creation time, so a recycled pid is not mistaken
        # for the process that used to have it.
        if proc is not None and proc.is_running():
            return proc
        try:
            proc = psutil.Process(pid)
        except _GONE:
            self._known.pop(pid, None)
            return None
        self._known[pid] = proc
        return proc

