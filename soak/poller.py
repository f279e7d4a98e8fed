"""The kubelet's part: `/livez` and `/readyz` at 20 Hz, a new connection each time, each
request bounded by the probe timeout. Every answer (or its absence) is counted."""

from __future__ import annotations

import http.client
import time
from collections import Counter
from dataclasses import dataclass, field

from soak.background import Background

RATE = 20.0  # requests a second, per path
# The kubelet's default timeoutSeconds is 1; slower than this is as bad as no answer.
PROBE_TIMEOUT = 1.0


@dataclass
class PathTally:
    """What one path answered over the soak."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    refused: int = 0  # connection refused or reset: nobody listening
    timed_out: int = 0  # no answer within PROBE_TIMEOUT
    slowest: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0

    def summary(self) -> dict[str, object]:
        return {"sent": self.sent, "answered": self.answered,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "refused": self.refused, "timed_out": self.timed_out,
                "p50_ms": round(self.percentile(0.5) * 1000, 1),
                "p99_ms": round(self.percentile(0.99) * 1000, 1),
                "slowest_ms": round(self.slowest * 1000, 1)}


class Poller(Background):
    """Polls `paths` on 127.0.0.1:`port` in a thread until `stop()`."""

    def __init__(self, port: int, paths: tuple[str, ...] = ("/livez", "/readyz")) -> None:
        super().__init__()
        self.port = port
        self.tallies = {path: PathTally() for path in paths}

    def _run(self) -> None:
        period = 1.0 / RATE
        next_at = time.monotonic()
        while not self._stop.is_set():
            for path, tally in self.tallies.items():
                self._probe(path, tally)
            next_at += period
            # Behind schedule (a slow answer): start again from now rather than burst.
            next_at = max(next_at, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def _probe(self, path: str, tally: PathTally) -> None:
        tally.sent += 1
        began = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT)
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            answer.read()
            took = time.monotonic() - began
            if took > PROBE_TIMEOUT:
                tally.timed_out += 1
            else:
                tally.statuses[answer.status] += 1
            tally.latencies.append(took)
            tally.slowest = max(tally.slowest, took)
        except TimeoutError:
            tally.timed_out += 1
            tally.slowest = max(tally.slowest, time.monotonic() - began)
        except OSError:
            tally.refused += 1
        finally:
            connection.close()
