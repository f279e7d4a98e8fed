"""The two listeners of the health service, on the engine's event loop.

The sockets are made here rather than by aiohttp so that their details are ours: the unix
socket exists with mode 0600 from its first instant, a stale one left by a killed pod is
replaced (a live one is not), and a TCP port of 0 reports the port it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from pathlib import Path

from aiohttp import web

from healthz.app import DEFAULT_LAG_LIMIT, make_app
from healthz.connguard import (
    BACKLOG,
    SILENT_TIMEOUT,
    ConnectionGuard,
    connection_cap,
    current_soft_limit,
)
from healthz.digits import is_ascii_number
from healthz.eventfeed import EventFeed
from healthz.metrics_deferred import Metrics
from healthz.model import Pod

# Idle keep-alive connections are closed after this; a prober opens a new one each period.
KEEPALIVE_TIMEOUT = 15.0
# How long stop() lets answers in flight finish; a verb still waiting is cancelled after it.
SHUTDOWN_TIMEOUT = 2.0
# How long the kernel holds a connected client that has sent nothing before handing it over.
DEFER_ACCEPT_SECONDS = 30


def parse_addr(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (all interfaces) → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"bad address {text!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError(f"bad address {text!r}: expected HOST:PORT")
        if ":" in host:
            raise ValueError(f"bad address {text!r}: an IPv6 address goes in brackets")
    if not is_ascii_number(port_text) or int(port_text) > 65535:
        raise ValueError(f"bad address {text!r}: port must be 0-65535 (ASCII digits)")
    return host or "0.0.0.0", int(port_text)  # noqa: S104  # the kubelet probes the pod IP


def bind_tcp(host: str, port: int) -> socket.socket:
    """A bound TCP socket for `host`, first address getaddrinfo gives (IPv4 or IPv6)."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # A restarted pod must get its port back while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Wake us only once a client has sent its request: a prober sends it at once, while
        # a connection that says nothing then waits in the kernel, costing PID 1 neither a
        # descriptor nor memory (healthz.connguard bounds those that get through anyway).
        defer = getattr(socket, "TCP_DEFER_ACCEPT", None)
        if defer is not None:
            sock.setsockopt(socket.IPPROTO_TCP, defer, DEFER_ACCEPT_SECONDS)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_unix(path: Path) -> socket.socket:
    """A unix socket at `path`, mode 0600 from the start, its directory made 0700 if missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bind() creates the file with 0777 & ~umask. Setting the mode with chmod afterwards would
    # leave a moment in which another user could connect, so the umask is narrowed around the
    # bind instead. The umask is process-wide, but only ever narrower for that instant.
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return sock


def _remove_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", str(path))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        # Nobody listens: left behind by a pod that was killed. Safe to take over.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another process is serving this socket", str(path))


class HealthServer:
    """Serves the public face on `tcp_addr` and the private face on `unix_path`.

    Either may be None to serve only the other. Handlers only read `pod.snapshot()`, so the
    listeners never wait on the engine's work, and no access log is written: the engine logs.
    """

    def __init__(
        self,
        pod: Pod,
        metrics: Metrics,
        *,
        tcp_addr: str | None = "0.0.0.0:8081",
        unix_path: Path | None = None,
        lag_limit: float = DEFAULT_LAG_LIMIT,
        connection_limit: int | None = None,
        feed: EventFeed | None = None,
    ) -> None:
        self._pod = pod
        self._feed = feed
        self._metrics = metrics
        self._tcp_addr = None if tcp_addr is None else parse_addr(tcp_addr)
        self._unix_path = unix_path
        self._lag_limit = lag_limit
        self._runners: list[web.AppRunner] = []
        self._listeners: list[asyncio.Server] = []
        # None: from the descriptor limit in force when the listener starts.
        self._connection_limit = connection_limit
        self.guard: ConnectionGuard | None = None  # the public listener's, once serving
        self._unix_inode: tuple[int, int] | None = None
        self.tcp_port: int | None = None  # the port bound, useful when asked for port 0

    async def start(self) -> None:
        """Bind and serve both listeners; on any failure nothing is left listening."""
        try:
            if self._tcp_addr is not None:
                sock = bind_tcp(*self._tcp_addr)
                self.tcp_port = sock.getsockname()[1]
                await self._serve(sock, private=False)
            if self._unix_path is not None:
                sock = bind_unix(self._unix_path)
                st = os.stat(self._unix_path)
                self._unix_inode = (st.st_dev, st.st_ino)
                await self._serve(sock, private=True)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop serving, close the sockets and remove our socket file (not a newer pod's)."""
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
        if self._unix_path is not None and self._unix_inode is not None:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self._unix_path)
                if (st.st_dev, st.st_ino) == self._unix_inode:
                    self._unix_path.unlink()
            self._unix_inode = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _serve(self, sock: socket.socket, *, private: bool) -> None:
        app = make_app(self._pod, metrics=self._metrics, private=private, lag_limit=self._lag_limit,
                       feed=self._feed)
        guard: ConnectionGuard | None = None
        if not private:
            limit = self._connection_limit or connection_cap(current_soft_limit())
            guard = ConnectionGuard(limit, idle_timeout=SILENT_TIMEOUT)
            app.middlewares.append(guard.middleware)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,  # the engine owns the signals
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        try:
            await runner.setup()
        except BaseException:
            sock.close()
            raise
        self._runners.append(runner)
        if guard is None:
            await web.SockSite(runner, sock).start()
            return
        # The public listener is ours rather than a SockSite so that every accepted
        # connection passes the guard first (aiohttp has no connection limit of its own).
        loop = asyncio.get_running_loop()
        assert runner.server is not None  # set by setup()
        listener = await loop.create_server(guard.attach(runner.server), sock=sock,
                                            backlog=BACKLOG)
        self._listeners.append(listener)
        self.guard = guard
