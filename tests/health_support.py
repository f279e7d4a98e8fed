"""A scripted stand-in for the engine, and a real HealthServer around it, for the faces' tests.

Only the engine is faked: the sockets, the HTTP server and the HTTP client are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from healthz.metrics import PodMetrics
from healthz.model import (
    CatalogueCheck,
    PodSnapshot,
    RunRequest,
    ServiceSnapshot,
    State,
    UnknownService,
    VerbFailed,
)
from healthz.server import HealthServer

# Looks like a credential on purpose: it must never leave through the TCP listener.
SECRET = "JWT_SECRET=hunter2-7f3a9c"


def service(
    name: str, *, critical: bool = True, ready: bool = True, **kw: object
) -> ServiceSnapshot:
    """A running service, ready unless told otherwise."""
    fields: dict[str, object] = {
        "state": State.RUNNING, "live": True, "pid": None, "started_at": time.time() - 30,
        "restarts": 0,
    }
    fields.update(kw)
    return ServiceSnapshot(name=name, critical=critical, ready=ready, **fields)  # type: ignore[arg-type]


def default_pod_services() -> list[ServiceSnapshot]:
    """The default pod's catalogue: nginx and theia critical, the rest not."""
    return [
        service("theia", state=State.STARTING, ready=False, reason="probe: connection refused"),
        service("coditect-v5-api", critical=False, state=State.STARTING, ready=False),
        service("codi2", critical=False, state=State.STARTING, ready=False),
        service("file-monitor", critical=False, state=State.STARTING, ready=False),
        service("nginx", state=State.WAITING, ready=False, reason="waiting for theia"),
    ]


@dataclass
class Call:
    verb: str
    name: str
    arg: int | None = None


class FakePod:
    """Implements `healthz.model.Pod` from scripted snapshots; verbs can be held or failed."""

    def __init__(self, services: list[ServiceSnapshot]) -> None:
        self.services = {s.name: s for s in services}
        self.draining = False
        self.started_up = False
        self.booted_at = time.time() - 60
        self.reload_errors: tuple[str, ...] = ()
        self.lag = 0.0
        self.pids: dict[str, list[int]] = {}
        self.calls: list[Call] = []
        self.gate: asyncio.Event | None = None  # when set, verbs wait for it
        self.fail_with: str | None = None  # when set, verbs raise VerbFailed(fail_with)
        self.crash: Exception | None = None  # when set, verbs raise it (an engine bug)
        self.reload_answer: tuple[bool, list[str]] = (True, ["no change"])
        self.check_answer = CatalogueCheck(valid=True, summary="catalogue valid: 5 services",
                                           catalogue="/catalogue")
        self.logs_dir = Path("/nonexistent")  # where log_path points; a test sets its own

    def update(self, name: str, **changes: object) -> None:
        self.services[name] = dataclasses.replace(self.services[name], **changes)  # type: ignore[arg-type]

    def all_ready(self) -> None:
        for name in self.services:
            self.update(name, state=State.RUNNING, ready=True, reason="")
        self.started_up = True

    # -- the Pod protocol

    def snapshot(self) -> PodSnapshot:
        return PodSnapshot(
            services=tuple(self.services.values()),
            draining=self.draining,
            started_up=self.started_up,
            booted_at=self.booted_at,
            reload_errors=self.reload_errors,
        )

    def loop_lag(self) -> float:
        return self.lag

    def pids_of(self, name: str) -> list[int]:
        return list(self.pids.get(name, []))

    async def start_service(self, name: str) -> str:
        await self._verb("start", name)
        self.update(name, state=State.RUNNING)
        return f"{name}: started"

    async def stop_service(self, name: str) -> str:
        await self._verb("stop", name)
        self.update(name, state=State.STOPPED, pid=None, ready=False)
        return f"{name}: stopped"

    async def restart_service(self, name: str) -> str:
        await self._verb("restart", name)
        return f"{name}: restarted"

    async def signal_service(self, name: str, signum: int) -> str:
        await self._verb("signal", name, signum)
        return f"{name}: sent signal {signum}"

    async def run_transient(self, request: RunRequest) -> str:
        self.calls.append(Call("run", request.name))
        if self.fail_with is not None:
            raise VerbFailed(self.fail_with)
        self.services[request.name] = ServiceSnapshot(
            name=request.name, state=State.RUNNING, critical=False, ready=True, live=True,
            pid=None, started_at=None, restarts=0, transient=True)
        return f"{request.name}: running"

    async def reload(self) -> tuple[bool, list[str]]:
        self.calls.append(Call("reload", ""))
        if self.gate is not None:
            await self.gate.wait()
        return self.reload_answer

    async def check_catalogue(self) -> CatalogueCheck:
        self.calls.append(Call("check", ""))
        if self.gate is not None:
            await self.gate.wait()
        return self.check_answer

    def log_path(self, name: str) -> str:
        return str(self.logs_dir / f"{name}.log")

    async def _verb(self, verb: str, name: str, arg: int | None = None) -> None:
        self.calls.append(Call(verb, name, arg))
        if name not in self.services:
            raise UnknownService(name)
        if self.gate is not None:
            await self.gate.wait()
        if self.crash is not None:
            raise self.crash
        if self.fail_with is not None:
            raise VerbFailed(self.fail_with)


@dataclass
class Faces:
    """A running HealthServer and a client session for each of its listeners."""

    server: HealthServer
    tcp: aiohttp.ClientSession
    unix: aiohttp.ClientSession
    socket_path: Path

    @property
    def tcp_url(self) -> str:
        return f"http://127.0.0.1:{self.server.tcp_port}"

    async def get(self, face: str, path: str) -> tuple[int, str]:
        session, base = (self.tcp, self.tcp_url) if face == "tcp" else (self.unix, "http://pod")
        async with session.get(base + path) as resp:
            return resp.status, await resp.text()


def unix_session(socket_path: Path) -> aiohttp.ClientSession:
    """The in-process tests' client of the control socket (aiohttp, on the test's own loop;
    podctl's blocking client is for processes), with the deadline every request needs."""
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path)),
                                 timeout=aiohttp.ClientTimeout(total=10))


@contextlib.asynccontextmanager
async def running_faces(pod: FakePod, tmp_path: Path, **kw: object) -> AsyncIterator[Faces]:
    """Serve `pod` on 127.0.0.1 port 0 and on a unix socket under `tmp_path`."""
    socket_path = tmp_path / "run" / "podctl.sock"
    server = HealthServer(
        pod, PodMetrics(pod), tcp_addr="127.0.0.1:0", unix_path=socket_path,
        **kw,  # type: ignore[arg-type]
    )
    # Every request in these tests has a deadline: a hang is a failure, not a stuck suite.
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        server,
        aiohttp.ClientSession(timeout=timeout) as tcp,
        unix_session(socket_path) as unix,
    ):
        yield Faces(server, tcp, unix, socket_path)


