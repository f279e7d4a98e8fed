"""Zombies in the pod's namespace, looked for four times a second, and the supervisor's RSS
every `RSS_EVERY` seconds. A zombie is normal for the instant between a child's death and its
reaping; one still there `LINGER` seconds later was not reaped, and that is what counts."""

from __future__ import annotations

import contextlib
from typing import Any

import psutil

from soak.background import Background
from soak.pod import SoakPod

SCAN_EVERY = 0.25  # seconds
LINGER = 1.0  # seconds a zombie may exist before it counts as not reaped
RSS_EVERY = 5.0  # seconds between two RSS samples (for the report's curve)


class ZombieWatch(Background):
    def __init__(self, pod: SoakPod) -> None:
        super().__init__()
        self.pod = pod
        self.seen = 0  # zombies seen at all (reaped soon after: fine)
        self.rss: list[tuple[float, int]] = []  # (seconds since start, bytes)
        self.lingering: dict[tuple[int, float], str] = {}
        self._first_seen: dict[tuple[int, float], float] = {}

    def _run(self) -> None:
        clock = 0.0
        while not self._stop.wait(SCAN_EVERY):
            clock += SCAN_EVERY
            if clock % RSS_EVERY < SCAN_EVERY / 2:
                with contextlib.suppress(psutil.Error):
                    self.rss.append((clock, self.pod.rss()))
            now_zombies = set()
            for proc in self.pod.tree():
                try:
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        continue
                    key = (proc.pid, proc.create_time())
                    parent = proc.ppid()
                except psutil.Error:
                    continue
                now_zombies.add(key)
                if key not in self._first_seen:
                    self._first_seen[key] = clock
                    self.seen += 1
                elif clock - self._first_seen[key] >= LINGER:
                    self.lingering[key] = f"pid {proc.pid} (parent {parent})"
            for key in set(self._first_seen) - now_zombies:
                del self._first_seen[key]

    def summary(self) -> dict[str, Any]:
        return {"seen": self.seen, "lingering": sorted(self.lingering.values()),
                "rss_mib": [(round(t), round(b / 2**20, 2)) for t, b in self.rss]}
