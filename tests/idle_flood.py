"""A load generator for the health port, run as its own process: CLIENTS connections that
connect, send nothing, and connect again as soon as they are closed, for SECONDS.

Usage: python tests/idle_flood.py HOST PORT CLIENTS SECONDS
Prints one JSON line at the end: connects made, closes seen, connect errors.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time


async def client(host: str, port: int, deadline: float, counts: dict[str, int]) -> None:
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), max(0.01, deadline - time.monotonic()))
        except (OSError, TimeoutError):
            counts["errors"] += 1
            await asyncio.sleep(0.05)  # pacing a failed connect, not waiting for a state
            continue
        counts["connects"] += 1
        try:
            remaining = max(0.0, deadline - time.monotonic())
            if await asyncio.wait_for(reader.read(1), remaining) == b"":
                counts["closed"] += 1
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()


async def main(host: str, port: int, clients: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    counts = {"connects": 0, "closed": 0, "errors": 0}
    await asyncio.gather(*(client(host, port, deadline, counts) for _ in range(clients)))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    # The flood needs more descriptors than the pod under test is given.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port, clients, seconds = sys.argv[1:5]
    asyncio.run(main(host, int(port), int(clients), float(seconds)))
