"""The public listener's connection cap: at the cap, the connection that has waited longest
without finishing a request is closed to make room, and a prober still gets its answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.wait import until
from healthz.connguard import MAX_CAP, MIN_CAP, connection_cap
from tests.health_support import FakePod, default_pod_services, running_faces

CAP = 4


async def half_request(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that started a request and never finished it (a slow client)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    return reader, writer


async def test_oldest_unfinished_connection_makes_room(tmp_path: Path) -> None:
    """With the cap held by unfinished requests, a new prober is answered and the oldest
    of them is closed; the newer ones stay open."""
    async with running_faces(FakePod(default_pod_services()), tmp_path,
                             connection_limit=CAP) as faces:
        port = faces.server.tcp_port
        assert port is not None and faces.server.guard is not None
        held = [await half_request(port) for _ in range(CAP)]
        guard = faces.server.guard
        # Each is handed over once its first bytes arrive.
        await until(lambda: not guard.silent and guard.shed_total == 0,
                         what="the half requests handed to the server")
        status, _ = await faces.get("tcp", "/livez")
        assert status == 200
        assert guard.shed_total >= 1
        oldest_reader = held[0][0]
        assert await asyncio.wait_for(oldest_reader.read(), 5) == b""  # closed by us
        newest_writer = held[-1][1]
        assert not newest_writer.is_closing()
        for _, writer in held:
            writer.close()


def test_cap_follows_the_descriptor_limit() -> None:
    """The cap leaves a reserve for spawns and probes, within fixed bounds."""
    assert connection_cap(1024) == (1024 - 512) // 2
    assert connection_cap(100) == MIN_CAP
    assert connection_cap(1 << 20) == MAX_CAP
