"""The demo's stand-in services, run as real processes: each speaks its protocol and stops at once
on SIGTERM with exit code 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
import pytest

from tests.support import free_port

STANDINS = Path(__file__).resolve().parent.parent / "demo" / "standins"
API_ENV = {"JWT_SECRET": "test-only", "FDB_CLUSTER_FILE": "/nonexistent/fdb.cluster"}

# The contract: a stand-in stops within a second of SIGTERM (the supervisor's drain counts on it).
STOP_WITHIN = 1.0
# Generous, so a loaded CI machine does not fail a test that would pass on a quiet one.
START_WITHIN = 15.0


Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start a stand-in by its file name; whatever is still running at the end is killed."""
    started: list[asyncio.subprocess.Process] = []

    async def _spawn(
        name: str, *args: str, env: Mapping[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        base = {k: v for k, v in os.environ.items() if k not in API_ENV}
        proc = await asyncio.create_subprocess_exec(
            # sys.executable, not the shebang: the venv's python need not be first on PATH here.
            sys.executable,
            str(STANDINS / name),
            *args,
            env={**base, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


async def listening(proc: asyncio.subprocess.Process) -> str:
    """Wait for the one line a stand-in prints once it listens (it says so; nothing to poll)."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), START_WITHIN)
    if not line:
        assert proc.stderr is not None
        err = await proc.stderr.read()
        pytest.fail(f"exited {await proc.wait()} before listening: {err.decode()!r}")
    return line.decode()


async def stops_cleanly(proc: asyncio.subprocess.Process) -> None:
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(proc.wait(), STOP_WITHIN * 5)
    assert code == 0
    assert time.monotonic() - began < STOP_WITHIN


def test_standins_are_executable_scripts() -> None:
    """Each stand-in can be named as a catalogue command: executable, with a python3 shebang."""
    for name in ("theia-standin", "api-standin", "codi2-standin"):
        path = STANDINS / name
        assert os.access(path, os.X_OK), path
        assert path.read_text().startswith("#!/usr/bin/env python3\n"), path


async def test_theia_serves_a_page_after_its_start_delay(spawn: Spawn) -> None:
    """Nothing listens during --start-delay; then `GET /` is an HTML page; TERM exits 0."""
    port = free_port()
    began = time.monotonic()
    proc = await spawn("theia-standin", "--port", str(port), "--start-delay", "0.5")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/")
        assert f"127.0.0.1:{port}" in await listening(proc)
        assert time.monotonic() - began >= 0.5
        async with session.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert "<html" in await resp.text()
    await stops_cleanly(proc)


async def test_theia_stops_at_once_during_its_start_delay(spawn: Spawn) -> None:
    """A TERM while Theia is still 'starting' ends it without waiting out the delay."""
    proc = await spawn("theia-standin", "--port", str(free_port()), "--start-delay", "30")
    await asyncio.wait_for(catches_term(proc), START_WITHIN)
    await stops_cleanly(proc)


async def catches_term(proc: asyncio.subprocess.Process) -> None:
    """Return once the process has its TERM handler (call under a deadline): a TERM sent
    earlier, while the interpreter is still starting, would kill it and prove nothing."""
    status = Path(f"/proc/{proc.pid}/status")
    term_bit = 1 << (signal.SIGTERM - 1)
    while True:
        caught = next(ln for ln in status.read_text().splitlines() if ln.startswith("SigCgt:"))
        if int(caught.split()[1], 16) & term_bit:
            return
        await asyncio.sleep(0.01)


async def test_api_answers_its_health_route(spawn: Spawn) -> None:
    """`GET /api/v5/health` is 200 JSON with status healthy, as coditect-v5-api answers."""
    port = free_port()
    proc = await spawn("api-standin", "--port", str(port), env=API_ENV)
    await listening(proc)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/api/v5/health") as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["status"] == "healthy"
    await stops_cleanly(proc)


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "JWT_SECRET, FDB_CLUSTER_FILE"),
        ({"JWT_SECRET": "x"}, "FDB_CLUSTER_FILE"),
        ({"FDB_CLUSTER_FILE": "/f", "JWT_SECRET": ""}, "JWT_SECRET"),
    ],
)
async def test_api_refuses_to_start_without_its_secrets(
    spawn: Spawn, env: dict[str, str], missing: str
) -> None:
    """Like the real API's panic: exit 1 and one stderr line naming what is missing."""
    proc = await spawn("api-standin", "--port", str(free_port()), env=env)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), START_WITHIN)
    assert proc.returncode == 1
    assert stdout == b""
    lines = stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(f"{missing} not set")


async def test_codi2_answers_ping_and_acknowledges_messages(spawn: Spawn) -> None:
    """A real WebSocket: ping gets pong, each text message a JSON audit ack."""
    port = free_port()
    proc = await spawn("codi2-standin", "--port", str(port))
    await listening(proc)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{port}/", autoping=False) as ws,
    ):
        await ws.ping(b"are-you-there")
        pong = await ws.receive(timeout=5)
        assert pong.type is aiohttp.WSMsgType.PONG
        assert pong.data == b"are-you-there"
        for seq, text in enumerate(("first", "second"), start=1):
            await ws.send_str(text)
            ack = await ws.receive_json(timeout=5)
            assert ack == {"type": "audit_ack", "seq": seq, "received": text}
    await stops_cleanly(proc)


async def test_codi2_refuses_plain_http(spawn: Spawn) -> None:
    """A request without the upgrade gets 426, so an HTTP probe cannot pass by mistake."""
    port = free_port()
    proc = await spawn("codi2-standin", "--port", str(port))
    await listening(proc)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/") as resp,
    ):
        assert resp.status == 426
    await stops_cleanly(proc)


async def test_codi2_closes_open_sockets_on_term(spawn: Spawn) -> None:
    """An open WebSocket does not hold up the stop: the client is told 1001 going away."""
    port = free_port()
    proc = await spawn("codi2-standin", "--port", str(port))
    await listening(proc)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{port}/") as ws,
    ):
        # Reading while the stop happens, as a real client does, to see the close frame.
        closing = asyncio.create_task(ws.receive(timeout=5))
        await stops_cleanly(proc)
        msg = await closing
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == aiohttp.WSCloseCode.GOING_AWAY


async def test_a_busy_port_is_a_one_line_error(spawn: Spawn) -> None:
    """A stand-in that cannot listen says so on one line and exits 1 instead of a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await spawn("theia-standin", "--port", str(port))
        stdout, stderr = await asyncio.wait_for(proc.communicate(), START_WITHIN)
    assert proc.returncode == 1
    assert stdout == b""
    assert len(stderr.decode().splitlines()) == 1
    assert f":{port}" in stderr.decode()
