"""How many connections the public health listener holds, what one costs, which goes first.

Anyone who can reach the port can open connections; each costs PID 1 a descriptor and memory,
and descriptors are also what spawns, probes, log files and the control socket need. So:

- A new connection is held by a small protocol of ours until its first bytes arrive; only
  then is it handed to aiohttp. A connection that says nothing costs a transport and a few
  slots (~2 KiB) instead of aiohttp's handler, parser and task (~9 KiB). It is closed after
  `idle_timeout`, which is long on purpose: closing silent clients early only makes them
  reconnect, and that churn costs more (CPU, a heap fragmented by short-lived objects) than
  holding them; a crowd of them is bounded by the cap instead.
- At most `cap` connections are held. When a new one arrives at the cap, the one that has
  waited longest without sending anything is closed to make room (or, failing that, the oldest
  connection not in the middle of a request). Closing the oldest rather than refusing the
  newest keeps the port answering a prober that connects and asks at once (the kubelet,
  Docker's HEALTHCHECK) while clients that connect and say nothing keep losing their place.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

# Descriptors kept free of health connections: spawns (two pipes each), probes (a socket
# each), log files and their rotation, the control socket, inotify and the loop's own.
RESERVED_FDS = 512
# Enough for any number of honest probers and a flood of idle ones without churn; bounds the
# memory a flood can take as well (4096 silent connections ≈ 4 MiB).
MAX_CAP = 4096
MIN_CAP = 16
# The kernel's queue of connections not yet accepted: large enough that a burst of connects
# waits there instead of losing SYNs (a lost SYN costs its client a second).
BACKLOG = 4096
# How long a connection may stay silent when the listener is not full.
SILENT_TIMEOUT = 120.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def current_soft_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CAP * 4 if soft == resource.RLIM_INFINITY else soft


def connection_cap(nofile: int) -> int:
    """The connections the public listener may hold under a soft descriptor limit."""
    return max(MIN_CAP, min(MAX_CAP, (nofile - RESERVED_FDS) // 2))


class _Silent(asyncio.Protocol):
    """A connection that has not sent a byte yet."""

    __slots__ = ("_guard", "_timer", "transport")

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._guard.silent[self] = None
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.idle_timeout, self.close)

    def data_received(self, data: bytes) -> None:
        transport, self.transport = self.transport, None
        self._forget()
        if transport is None:
            return
        handler = self._guard.handler_factory()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)

    def eof_received(self) -> bool:
        return False  # close: nothing was asked

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._forget()

    def close(self) -> None:
        transport, self.transport = self.transport, None
        self._forget()
        if transport is not None:
            transport.close()

    def _forget(self) -> None:
        self._guard.silent.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ConnectionGuard:
    """The public listener's protocol factory in front of aiohttp's server.

    `middleware` marks the connections in the middle of a request; the application is frozen
    before the server exists, so the two are attached separately (`attach`).
    """

    def __init__(self, cap: int, idle_timeout: float) -> None:
        self.cap = cap
        self.idle_timeout = idle_timeout
        self.silent: dict[_Silent, None] = {}  # in order of arrival
        self._server: web.Server | None = None
        self._busy: set[RequestHandler] = set()
        self.shed_total = 0  # connections closed to make room

    def attach(self, server: web.Server) -> ConnectionGuard:
        self._server = server
        return self

    def handler_factory(self) -> RequestHandler:
        assert self._server is not None, "attach() the runner's server first"
        return self._server()

    def __call__(self) -> _Silent:
        assert self._server is not None, "attach() the runner's server first"
        if len(self.silent) + len(self._server.connections) >= self.cap:
            self._make_room()
        return _Silent(self)

    def _make_room(self) -> None:
        if self.silent:
            next(iter(self.silent)).close()
            self.shed_total += 1
            return
        assert self._server is not None
        # The server's list is in order of arrival: the first idle one has waited longest.
        for handler in self._server.connections:
            if handler not in self._busy and handler.connected:
                handler.force_close()
                self.shed_total += 1
                return

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = request.protocol
        if not isinstance(protocol, RequestHandler):
            return await handler(request)
        self._busy.add(protocol)
        try:
            return await handler(request)
        finally:
            self._busy.discard(protocol)
