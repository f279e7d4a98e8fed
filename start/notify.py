"""systemd's notification protocol (sd_notify): one datagram socket that services tell their
state on (`ready=notify`, `watchdog=`; docs/CATALOGUE.md).

A child finds the socket in `NOTIFY_SOCKET` and sends datagrams of `KEY=VALUE` lines
(`READY=1`, `STATUS=…`, `WATCHDOG=1`, …). The kernel attaches the sender's credentials
(SO_PASSCRED), so who sent a datagram is known without trusting what it says; the pod then
decides which service, if any, the sender belongs to (`Pod.on_notify`).

PID 1 reads the socket on its event loop and never blocks on it. A child that floods it
cannot starve PID 1: each wakeup reads at most `BURST` datagrams, each at most `MAX_DATAGRAM`
bytes (longer ones are dropped whole), and past `RATE` datagrams a second the socket is left
unread until the second is over. What waits meanwhile waits in the kernel's buffer, whose size
is fixed (`RCVBUF`): a full buffer blocks the sender, never us.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SOCKET_NAME = "notify.sock"
MAX_DATAGRAM = 4096  # a state message is a few dozen bytes; systemd's own limit is larger
BURST = 64  # datagrams read per wakeup of the loop, so other callbacks run in between
RATE = 200  # datagrams a second, all services together; beyond, reading pauses
RCVBUF = 64 * 1024  # the kernel's queue for the socket: what a flood can make it hold
STATUS_CHARS = 200  # STATUS= is shown in a table: kept to one short line
_UCRED = struct.Struct("3i")  # pid, uid, gid
_ANCILLARY = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(16 * 4)


@dataclass(frozen=True, slots=True)
class Told:
    """What a service's current run has told of itself; a new run starts with nothing."""

    status: str = ""  # the last STATUS=
    holding: str = ""  # "RELOADING=1" or "STOPPING=1": not ready until its next READY=1


def parse(datagram: bytes) -> dict[str, str]:
    """`KEY=VALUE` lines into a dict (the last of a key wins); anything else is skipped."""
    fields: dict[str, str] = {}
    for line in datagram.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


def one_line(text: str) -> str:
    """STATUS= as one printable line of bounded length (it reaches a terminal)."""
    shown = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return shown[:STATUS_CHARS]


def extension_seconds(value: str) -> float | None:
    """EXTEND_TIMEOUT_USEC's microseconds as seconds; None when it is not a positive number."""
    stripped = value.strip()
    if not stripped.isdecimal() or not stripped.isascii() or int(stripped) <= 0:
        return None
    return int(stripped) / 1_000_000


class NotifySocket:
    """The bound socket and its reader. `deliver(pid, fields)` hands a datagram to the service
    `pid` belongs to and says whether there was one; `emit` is the supervisor's event log."""

    def __init__(self, loop: asyncio.AbstractEventLoop, path: Path,
                 deliver: Callable[[int, dict[str, str]], bool],
                 emit: Callable[..., None], clock: Callable[[], float]) -> None:
        self.path = path
        self._loop = loop
        self._deliver = deliver
        self.events = emit
        self._clock = clock
        self._sock: socket.socket | None = None
        self._window_start = 0.0
        self._in_window = 0
        self._resume: asyncio.TimerHandle | None = None
        self.ignored = 0  # from a process of no service's run (or gone before it was read)
        self.dropped = 0  # longer than MAX_DATAGRAM

    def open(self) -> bool:
        """Bind and start reading; False (and an event saying why) when it cannot be bound:
        the pod runs on, and services that wait for READY=1 time out as any unready service."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # a previous pod's, in a run directory that survived it
            sock.bind(str(self.path))
            # A service running as another user must be able to send: who may speak for a
            # service is decided by the sender's credentials, not by the socket's mode.
            os.chmod(self.path, 0o666)  # noqa: S103
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            self.events("notify_socket_failed", path=str(self.path),
                       error=error.strerror or str(error), level="error")
            return False
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._readable)
        return True

    @property
    def address(self) -> str | None:
        """What a child gets as NOTIFY_SOCKET; None when the socket is not open."""
        return str(self.path) if self._sock is not None else None

    def close(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(BURST):
            if not self._take_token():
                return
            try:
                data, ancillary, flags, _ = sock.recvmsg(MAX_DATAGRAM, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                self._in_window -= 1  # nothing was there: the token was not used
                return
            except OSError as error:
                self.events("notify_read_failed", error=error.strerror or str(error),
                           level="error")
                return
            pid, passed = _sender(ancillary)
            try:
                if flags & socket.MSG_TRUNC:
                    self.dropped += 1
                    continue
                if pid is None or not self._deliver(pid, parse(data)):
                    self.ignored += 1
            finally:
                # Only now: closing a passed descriptor is what ends the sender's wait
                # (systemd-notify's BARRIER=1), after which it exits and its environment (the
                # run's mark) can no longer be read to tell whose it is.
                for fd in passed:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _take_token(self) -> bool:
        """One more datagram inside this second's RATE; else pause reading until it ends."""
        now = self._clock()
        if now - self._window_start >= 1.0:
            self._window_start, self._in_window = now, 0
        if self._in_window < RATE:
            self._in_window += 1
            return True
        if self._sock is not None and self._resume is None:
            self._loop.remove_reader(self._sock.fileno())
            wait = max(0.0, self._window_start + 1.0 - now)
            self._resume = self._loop.call_later(wait, self._resume_reading)
        return False

    def _resume_reading(self) -> None:
        self._resume = None
        if self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._readable)
            self._readable()


def _sender(ancillary: list[tuple[int, int, bytes]]) -> tuple[int | None, list[int]]:
    """The sender's pid from SCM_CREDENTIALS, and the descriptors a child passed (SCM_RIGHTS:
    systemd-notify's BARRIER=1, FDSTORE=1), which the caller closes: we keep none."""
    pid = None
    passed: list[int] = []
    for level, kind, data in ancillary:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_CREDENTIALS and len(data) >= _UCRED.size:
            pid = _UCRED.unpack_from(data)[0]
        elif kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            passed.extend(fds)
    return (pid if pid else None), passed
