"""CPU and memory of each service's whole process tree, and what no service accounts for.

A service is more than its main pid: nginx has workers, Theia forks node helpers, a terminal
in Theia starts a shell in a session of its own and whatever a person runs there with
`setsid` or `nohup … &`. What a person or Prometheus wants to know is the sum over everything
the service started, so a service's tree is what its run marks attribute as well as what
descends from its main process (`healthz.census`).

Nothing here runs on a timer: a tree is read when `/metrics` or a status asks, and one pass over
/proc serves every tree read in the next MAP_TTL (a status of five services, a scrape), so a
flood of scrapes does not become a flood of /proc reads on the engine's loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from healthz.census import Census, Identity, Scanner

MAP_TTL = 0.5  # seconds one pass over /proc serves at least; trees rarely change faster
# A pass costs PID 1 CPU in proportion to the pod's processes (~30-60 ms for 2,000): it then
# serves long enough that passes take at most CENSUS_CPU_SHARE of a core, however often
# /metrics or a status asks, up to MAP_TTL_MAX (how stale a busy pod's tree figures may be).
CENSUS_CPU_SHARE = 0.01
MAP_TTL_MAX = 10.0
USAGE_TTL = 1.0  # seconds one reading of a tree's RSS and CPU serves


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """Resource use summed over a process tree at one moment."""

    processes: int
    rss_bytes: int
    cpu_seconds: float  # user + system, including reaped children of each member
    cpu_percent: float  # since the previous read of the same processes; 0.0 the first time


class ProcessTree:
    """Reads process trees from a shared census, keeping each process's CPU time between reads
    so that a second `/v1/status` gives a meaningful `cpu_percent` (psutil's rule: measured
    against the previous read of the same process; a process read for the first time adds 0)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 scanner: Scanner | None = None) -> None:
        self._clock = clock
        self._scanner = scanner or Scanner()
        self._census: Census | None = None
        self._census_at = -MAP_TTL
        self._census_ttl = MAP_TTL
        self._usage: dict[tuple[str, tuple[int, ...]], tuple[float, TreeUsage | None]] = {}
        # Each process's CPU seconds at the two latest censuses that read it: (when, seconds).
        # Two, so that a scrape and a status inside one census both measure against the one
        # before it rather than the second seeing no time pass.
        self._cpu_seen: dict[Identity, tuple[tuple[float, float], tuple[float, float] | None]] = {}

    def census(self) -> Census:
        """The latest pass over /proc, taken again once it is older than its cost allows
        (MAP_TTL for a small pod; see CENSUS_CPU_SHARE)."""
        now = self._clock()
        if self._census is None or now - self._census_at >= self._census_ttl:
            cpu = time.thread_time()
            self._census, self._census_at = self._scanner.scan(), now
            cost = time.thread_time() - cpu
            self._census_ttl = min(MAP_TTL_MAX, max(MAP_TTL, cost / CENSUS_CPU_SHARE))
        return self._census

    def usage(self, root_pids: Iterable[int], service: str = "") -> TreeUsage | None:
        """The tree of `service` (its marked processes) and `root_pids` (with their
        descendants); None if nothing of it is alive. A reading is reused for USAGE_TTL."""
        key = (service, tuple(root_pids))
        now = self._clock()
        cached = self._usage.get(key)
        if cached is not None and now - cached[0] < USAGE_TTL:
            return cached[1]
        census = self.census()
        members = census.tree(service, key[1]) if service else census.descendants(key[1])
        reading = self._read(census, members, self._census_at)
        if len(self._usage) > 1024:  # pids come and go; keep the cache from growing forever
            self._usage.clear()
        self._usage[key] = (now, reading)
        return reading

    def unattributed(self, services: dict[str, list[int]]) -> int:
        """How many of the pod's processes no service's tree holds (the engine's own helpers
        left out); `services` maps each service to its main pids."""
        return len(self.census().unattributed(services))

    def _read(self, census: Census, members: set[int], taken: float) -> TreeUsage | None:
        if not members:
            return None
        rss = 0
        cpu_seconds = 0.0
        cpu_percent = 0.0
        for pid in members:
            proc = census.procs[pid]
            rss += proc.rss_bytes
            cpu_seconds += proc.cpu_seconds + proc.reaped_cpu_seconds
            before = self._cpu_before(proc.identity, taken, proc.cpu_seconds)
            if before is not None:
                cpu_percent += max(0.0, proc.cpu_seconds - before[1]) / (taken - before[0]) * 100
        return TreeUsage(len(members), rss, cpu_seconds, cpu_percent)

    def _cpu_before(self, identity: Identity, taken: float,
                    seconds: float) -> tuple[float, float] | None:
        """The reading of this process at the census before `taken`, recording this one."""
        seen = self._cpu_seen.get(identity)
        if seen is None:
            self._cpu_seen[identity] = ((taken, seconds), None)
            return None
        latest, previous = seen
        if latest[0] < taken:
            self._cpu_seen[identity] = ((taken, seconds), latest)
            return latest
        return previous

    def forget_dead(self) -> None:
        """Drop the CPU times of processes the latest census no longer saw."""
        if self._census is not None:
            live = {proc.identity for proc in self._census.procs.values()}
            self._cpu_seen = {k: v for k, v in self._cpu_seen.items() if k in live}
