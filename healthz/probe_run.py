"""Running one probe once: a verdict, a short human reason, how long it took.

aiohttp is imported inside the functions that need it, so that importing this module (and
parsing the catalogue) costs the engine nothing before its first child is spawned.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from healthz.durations import format_duration
from healthz.probe_exec import ExecOutcome, ExecRunner, SubprocessExecRunner
from healthz.probe_spec import WEB_KINDS, ProbeSpec

if TYPE_CHECKING:
    import aiohttp

BODY_LIMIT = 64 * 1024  # bytes of an HTTP body read before the connection is dropped
_PING_PAYLOAD = b"coditect-pod probe"
_USER_AGENT = "coditect-pod-probe"
_REASON_LIMIT = 200
_WS_CLOSE_WAIT = 0.1  # seconds


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's verdict. `at` is on the monotonic clock (the ProbeLoop's clock if injected)."""

    passed: bool
    reason: str
    duration: float
    at: float


class _Failed(Exception):
    """A probe failed for a reason already put in words."""


def new_probe_session() -> aiohttp.ClientSession:
    """A client session fit for probing: no pooling (each probe measures a fresh connection),
    no certificate check, no proxies from the environment, no timeout of its own."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, ssl=False),
        timeout=aiohttp.ClientTimeout(total=None),
        headers={"User-Agent": _USER_AGENT},
        trust_env=False,
    )


async def run_probe(
    spec: ProbeSpec,
    timeout: float,
    *,
    session: aiohttp.ClientSession | None = None,
    exec_runner: ExecRunner | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ProbeResult:
    """Run `spec` once, bounded by `timeout`. Never raises, except CancelledError.

    `session` is borrowed (a fresh one is made and closed when not given); `exec_runner`
    defaults to :class:`SubprocessExecRunner`."""
    started = time.perf_counter()
    try:
        reason = await _dispatch(spec, timeout, session, exec_runner)
        passed = True
    except _Failed as failure:
        passed, reason = False, str(failure)
    except TimeoutError:
        passed, reason = False, f"timed out after {format_duration(timeout)}"
    except Exception as exc:  # a probe must never take its caller down
        passed, reason = False, _describe_error(exc, web=spec.kind in WEB_KINDS)
    return ProbeResult(passed, _shorten(reason), time.perf_counter() - started, clock())


def refused_at_once(spec: ProbeSpec) -> bool:
    """True when a connection to the probe's port on this host is refused right away.

    Only for a TCP-based probe of an IP literal that reaches this pod (loopback or wildcard):
    there the kernel answers a connect at once, with no packet on a network, so "nothing
    listens yet" costs a socket and two syscalls (~17 µs) instead of a full probe through
    aiohttp (~0.3 ms of CPU, and its import on the first one). Anything else, a connection
    that is accepted or still in progress included, is False: the real probe decides."""
    if (spec.kind not in WEB_KINDS and spec.kind != "tcp") or spec.loopback_port is None:
        return False
    assert spec.host is not None
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    if not any(ch.isdigit() for ch in spec.host):  # "localhost": would need a lookup
        return False
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)  # never wait here: a full backlog would hold a blocking one
        if sock.connect_ex((spec.host, spec.port)) not in (errno.EINPROGRESS, errno.ECONNREFUSED):
            return False
        # Linux reports EINPROGRESS even on loopback, having already handled the refusal.
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED


async def _dispatch(
    spec: ProbeSpec,
    timeout: float,
    session: aiohttp.ClientSession | None,
    exec_runner: ExecRunner | None,
) -> str:
    if spec.kind == "none":
        return "no probe"
    if spec.kind == "tcp":
        return await _probe_tcp(spec, timeout)
    if spec.kind == "exec":
        return await _probe_exec(spec, timeout, exec_runner or SubprocessExecRunner())
    if session is not None:
        return await _probe_web(spec, timeout, session)
    async with new_probe_session() as own:
        return await _probe_web(spec, timeout, own)


async def _probe_web(spec: ProbeSpec, timeout: float, session: aiohttp.ClientSession) -> str:
    if spec.kind == "ws":
        return await _probe_ws(spec, timeout, session)
    return await _probe_http(spec, timeout, session)


async def _probe_tcp(spec: ProbeSpec, timeout: float) -> str:
    assert spec.host is not None and spec.port is not None
    async with asyncio.timeout(timeout):
        _, writer = await asyncio.open_connection(spec.host, spec.port)
        writer.close()
        with contextlib.suppress(OSError):  # connected is the verdict; how it ends is not
            await writer.wait_closed()
    return "connected"


async def _probe_http(spec: ProbeSpec, timeout: float, session: aiohttp.ClientSession) -> str:
    assert spec.url is not None
    async with (
        asyncio.timeout(timeout),
        session.get(spec.url, allow_redirects=False, ssl=False) as response,
    ):
        # Reading (part of) the body proves the server can finish an answer, not just start
        # one; more than BODY_LIMIT is not worth the time.
        remaining = BODY_LIMIT
        while remaining > 0 and (chunk := await response.content.read(remaining)):
            remaining -= len(chunk)
        if 200 <= response.status < 400:
            return f"HTTP {response.status}"
        raise _Failed(f"HTTP {response.status}")


async def _probe_ws(spec: ProbeSpec, timeout: float, session: aiohttp.ClientSession) -> str:
    import aiohttp

    assert spec.url is not None
    # Closing sends our close frame and waits this long for the answer before dropping the
    # connection: the verdict is already known by then, so the wait proves nothing.
    ws_timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_WS_CLOSE_WAIT)
    waiting_for_pong = False
    try:
        async with asyncio.timeout(timeout):
            try:
                ws = await session.ws_connect(
                    spec.url, autoping=False, autoclose=False, timeout=ws_timeout, ssl=False
                )
            except aiohttp.WSServerHandshakeError as exc:
                raise _Failed(f"websocket upgrade refused: HTTP {exc.status}") from None
            try:
                await ws.ping(_PING_PAYLOAD)
                waiting_for_pong = True
                await _receive_pong(ws)
                waiting_for_pong = False
            finally:
                await ws.close()
    except TimeoutError:
        if waiting_for_pong:
            raise _Failed(f"no pong within {format_duration(timeout)}") from None
        raise
    return "pong received"


async def _receive_pong(ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
    import aiohttp

    closed = {
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    }
    while True:
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.PONG:
            return
        if message.type in closed:
            raise _Failed("connection closed before the pong")
        # Text or binary the service sends on its own (a greeting) is not the answer.


async def _probe_exec(spec: ProbeSpec, timeout: float, runner: ExecRunner) -> str:
    outcome = await runner(spec.argv, timeout)
    if outcome.returncode == 0:
        return "exit status 0"
    raise _Failed(_describe_exit(outcome, timeout))


def _describe_exit(outcome: ExecOutcome, timeout: float) -> str:
    if outcome.returncode is None:
        return f"timed out after {format_duration(timeout)}"
    if outcome.returncode < 0:
        described = f"killed by signal {-outcome.returncode}"
        with contextlib.suppress(ValueError):  # a number that names no signal
            described += f" ({signal.Signals(-outcome.returncode).name})"
    else:
        described = f"exit status {outcome.returncode}"
    line = _first_line(outcome.output)
    return f"{described}: {line}" if line else described


def _first_line(output: bytes) -> str:
    for line in output.decode("utf-8", errors="replace").splitlines():
        if line.strip():
            return line.strip()
    return ""


def _describe_error(exc: Exception, *, web: bool) -> str:
    return _describe_client_error(exc) if web else _describe_local_error(exc)


def _describe_client_error(exc: Exception) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        return _describe_os_error(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"bad response: HTTP {exc.status} {exc.message}".rstrip()
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "broken response body"
    if isinstance(exc, aiohttp.ClientOSError):
        return _describe_os_error(exc)
    if isinstance(exc, aiohttp.ClientError):
        return f"{type(exc).__name__}: {exc}"
    return _describe_local_error(exc)


def _describe_local_error(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"command not found: {exc.filename}"
    if isinstance(exc, PermissionError) and exc.filename:
        return f"permission denied: {exc.filename}"
    if isinstance(exc, OSError):
        return _describe_os_error(exc)
    return f"probe error: {type(exc).__name__}: {exc}"


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(exc, ConnectionResetError) or exc.errno == errno.ECONNRESET:
        return "connection reset"
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _shorten(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= _REASON_LIMIT else reason[: _REASON_LIMIT - 1] + "…"
