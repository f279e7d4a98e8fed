"""HTTP load: `wrk` for the most requests a second, and an open-loop client at a fixed rate
for latency percentiles (wrk has no fixed rate, and wrk2 is not packaged in Debian).

The fixed-rate client measures each request from the moment it was due, not from when it
was sent, so a slow answer also counts against the requests queued behind it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from dataclasses import dataclass

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass
class WrkRun:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


def wrk(url: str, seconds: float, connections: int = 10, threads: int = 1) -> WrkRun:
    done = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
                           "--latency", url], capture_output=True, text=True,
                          timeout=seconds + 30, check=True)
    text = done.stdout

    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
        if found is None:
            raise ValueError(f"no {percent}% line in wrk's output:\n{text}")
        return float(found.group(1)) * _UNITS[found.group(2)]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if rate is None:
        raise ValueError(f"no Requests/sec in wrk's output:\n{text}")
    return WrkRun(float(rate.group(1)), latency("50"), latency("99"),
                  int(bad.group(1)) if bad else 0)


@dataclass
class RateRun:
    latencies_ms: list[float]
    errors: int
    achieved_per_second: float

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def fixed_rate(host: str, port: int, path: str, rate: float, seconds: float) -> RateRun:
    return asyncio.run(_fixed_rate(host, port, path, rate, seconds))


async def _fixed_rate(host: str, port: int, path: str, rate: float, seconds: float) -> RateRun:
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").encode()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()

    async def one(due: float) -> None:
        nonlocal errors
        try:
            reader, writer = idle.pop() if idle else await asyncio.open_connection(host, port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length:\s*(\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append((loop.time() - due) * 1000)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            idle.append((reader, writer))
        except (OSError, asyncio.IncompleteReadError, AttributeError, asyncio.LimitOverrunError):
            errors += 1

    total = int(rate * seconds)
    began = loop.time()
    wall = time.monotonic()
    tasks = []
    for i in range(total):
        due = began + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return RateRun(latencies, errors, total / (time.monotonic() - wall))
