"""Probes against real servers and real processes on this machine: every form passing and
failing every way it can, and the background loop's cadence, staleness and bounds."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from bench.wait import until
from healthz.probes import (
    PROBE_KINDS,
    ExecOutcome,
    ProbeLoop,
    ProbeResult,
    ProbeSpec,
    SubprocessExecRunner,
    parse_probe,
    refused_at_once,
    run_probe,
)

TIMEOUT = 0.3  # per-probe limit in tests that expect a timeout


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


# --- servers -------------------------------------------------------------------------------


@dataclass
class Web:
    """An aiohttp server on a loopback port with every behaviour a probe must tell apart."""

    port: int
    base: str
    ws_base: str


@pytest.fixture
async def release() -> AsyncIterator[asyncio.Event]:
    """Set at teardown so that handlers which hang on purpose return."""
    event = asyncio.Event()
    yield event
    event.set()


async def _serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    return runner


def _app(release: asyncio.Event) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="broken")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/fail")  # following it would turn the verdict to a failure

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while not release.is_set():
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the probe read enough and hung up, as it should
        return response

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()  # autoping: answers pings with pongs
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    async def ws_greeting(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"hello": "codi2"}')
        async for _ in ws:
            pass
        return ws

    async def ws_mute(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)  # reads nothing, never pongs
        await ws.prepare(request)
        await release.wait()
        return ws

    async def ws_hangup(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/hang", hang)
    app.router.add_get("/endless", endless)
    app.router.add_get("/ws", ws_echo)
    app.router.add_get("/ws-greeting", ws_greeting)
    app.router.add_get("/ws-mute", ws_mute)
    app.router.add_get("/ws-hangup", ws_hangup)
    return app


@pytest.fixture
async def server(release: asyncio.Event) -> AsyncIterator[Web]:
    runner = await _serve(_app(release))
    port = runner.addresses[0][1]
    yield Web(port, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    release.set()
    await runner.cleanup()


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server TLS context with a throwaway self-signed certificate no client trusts."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=probe-test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
async def tls_server(release: asyncio.Event, self_signed: ssl.SSLContext) -> AsyncIterator[str]:
    runner = await _serve(_app(release), self_signed)
    yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    release.set()
    await runner.cleanup()


@pytest.fixture
async def silent_port(release: asyncio.Event) -> AsyncIterator[int]:
    """A raw server that accepts connections and never says a word."""

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    release.set()
    server.close()
    await server.wait_closed()


@pytest.fixture
async def hangup_port() -> AsyncIterator[int]:
    """A raw server that reads each request and closes the connection without an answer."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
def closed_socket() -> Iterator[socket.socket]:
    """A loopback port that is bound but not listening: connecting is refused, and nothing
    else can take the port while the test runs. `listen()` opens it for business."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture
def refused_port(closed_socket: socket.socket) -> int:
    port: int = closed_socket.getsockname()[1]
    return port


async def probe(text: str, timeout: float = 2.0) -> ProbeResult:
    return await run_probe(parse_probe(text), timeout)


# --- http / https --------------------------------------------------------------------------


async def test_http_2xx_passes(server: Web) -> None:
    """A 200 answer passes and says so."""
    result = await probe(f"{server.base}/ok")
    assert (result.passed, result.reason) == (True, "HTTP 200")
    assert 0 <= result.duration < 2


async def test_http_3xx_passes_without_following(server: Web) -> None:
    """A redirect passes as it is; following it would reach a 500."""
    result = await probe(f"{server.base}/redirect")
    assert (result.passed, result.reason) == (True, "HTTP 302")


async def test_http_500_fails(server: Web) -> None:
    """A 5xx answer fails with the status as its reason."""
    result = await probe(f"{server.base}/fail")
    assert (result.passed, result.reason) == (False, "HTTP 500")


async def test_http_404_fails(server: Web) -> None:
    """A 4xx answer fails too."""
    assert (await probe(f"{server.base}/missing")).reason == "HTTP 404"


async def test_http_refused(refused_port: int) -> None:
    """Nothing listening: connection refused."""
    result = await probe(f"http://127.0.0.1:{refused_port}/")
    assert (result.passed, result.reason) == (False, "connection refused")


async def test_http_handler_hangs(server: Web) -> None:
    """A handler that never answers is cut off at the timeout."""
    started = time.monotonic()
    result = await probe(f"{server.base}/hang", TIMEOUT)
    assert (result.passed, result.reason) == (False, "timed out after 300ms")
    assert time.monotonic() - started < TIMEOUT + 1


async def test_http_silent_server(silent_port: int) -> None:
    """A server that accepts and never answers is cut off at the timeout."""
    result = await probe(f"http://127.0.0.1:{silent_port}/", TIMEOUT)
    assert (result.passed, result.reason) == (False, "timed out after 300ms")


async def test_http_server_hangs_up(hangup_port: int) -> None:
    """A server that closes the connection without answering fails with that reason."""
    result = await probe(f"http://127.0.0.1:{hangup_port}/")
    assert (result.passed, result.reason) == (False, "server closed the connection")


async def test_http_endless_body_is_read_bounded(server: Web) -> None:
    """An endless body does not hold the probe: a bounded part is read, then it hangs up."""
    result = await probe(f"{server.base}/endless", 5.0)
    assert (result.passed, result.reason) == (True, "HTTP 200")
    assert result.duration < 2


async def test_https_skips_certificate_check(tls_server: str) -> None:
    """https:// passes against a self-signed certificate: there is no certificate check."""
    assert (await probe(f"{tls_server}/ok")).reason == "HTTP 200"
    assert (await probe(f"{tls_server}/fail")).reason == "HTTP 500"


async def test_https_against_plain_http_fails(server: Web) -> None:
    """Speaking TLS to a plain server fails, it does not raise."""
    result = await probe(f"https://127.0.0.1:{server.port}/ok")
    assert not result.passed
    assert result.reason


async def test_borrowed_session_stays_open(server: Web) -> None:
    """A session passed in is used and left open for its owner."""
    async with aiohttp.ClientSession() as session:
        result = await run_probe(parse_probe(f"{server.base}/ok"), 2.0, session=session)
        assert result.passed
        assert not session.closed


# --- tcp -----------------------------------------------------------------------------------


async def test_tcp_passes(silent_port: int) -> None:
    """A listening port passes; nothing needs to be said on it."""
    result = await probe(f"tcp://127.0.0.1:{silent_port}")
    assert (result.passed, result.reason) == (True, "connected")


async def test_tcp_refused(refused_port: int) -> None:
    """Nothing listening: connection refused."""
    result = await probe(f"tcp://127.0.0.1:{refused_port}")
    assert (result.passed, result.reason) == (False, "connection refused")


async def test_tcp_timeout(closed_socket: socket.socket) -> None:
    """A port whose backlog is full never completes the handshake: timed out."""
    closed_socket.listen(0)
    port = closed_socket.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        # Fill the backlog (nobody accepts) until a connect no longer completes at once.
        for _ in range(16):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            if filler.connect_ex(("127.0.0.1", port)) not in (0,):
                break
        result = await probe(f"tcp://127.0.0.1:{port}", TIMEOUT)
    finally:
        for filler in fillers:
            filler.close()
    assert (result.passed, result.reason) == (False, "timed out after 300ms")


# --- ws ------------------------------------------------------------------------------------


async def test_ws_ping_answered(server: Web) -> None:
    """A real upgrade, a ping, a pong: passes."""
    result = await probe(f"{server.ws_base}/ws")
    assert (result.passed, result.reason) == (True, "pong received")


async def test_ws_greeting_before_pong(server: Web) -> None:
    """A message the service sends on connect is skipped; the pong still counts."""
    assert (await probe(f"{server.ws_base}/ws-greeting")).passed


async def test_ws_upgrade_refused(server: Web) -> None:
    """A plain HTTP answer to the upgrade fails with its status."""
    result = await probe(f"{server.ws_base}/ok")
    assert (result.passed, result.reason) == (False, "websocket upgrade refused: HTTP 200")
    result = await probe(f"{server.ws_base}/missing")
    assert (result.passed, result.reason) == (False, "websocket upgrade refused: HTTP 404")


async def test_ws_no_pong(server: Web) -> None:
    """Upgraded, but the ping is never answered: no pong within the timeout."""
    started = time.monotonic()
    result = await probe(f"{server.ws_base}/ws-mute", TIMEOUT)
    assert (result.passed, result.reason) == (False, "no pong within 300ms")
    assert time.monotonic() - started < TIMEOUT + 1


async def test_ws_closed_before_pong(server: Web) -> None:
    """The service closes right after the upgrade: failed, with that reason."""
    result = await probe(f"{server.ws_base}/ws-hangup")
    assert (result.passed, result.reason) == (False, "connection closed before the pong")


async def test_ws_refused(refused_port: int) -> None:
    """Nothing listening: connection refused."""
    assert (await probe(f"ws://127.0.0.1:{refused_port}/")).reason == "connection refused"


async def test_ws_upgrade_never_answered(silent_port: int) -> None:
    """A server that never answers the upgrade request: timed out."""
    result = await probe(f"ws://127.0.0.1:{silent_port}/", TIMEOUT)
    assert (result.passed, result.reason) == (False, "timed out after 300ms")


# --- exec ----------------------------------------------------------------------------------


async def test_exec_exit_0_passes() -> None:
    """exit 0 passes."""
    result = await probe("exec:sh -c 'exit 0'")
    assert (result.passed, result.reason) == (True, "exit status 0")


async def test_exec_non_zero_names_status_and_first_line() -> None:
    """A non-zero exit fails with the status and the first non-empty line of output."""
    result = await probe("""exec:sh -c 'echo; echo "  database down  " >&2; echo more; exit 2'""")
    assert (result.passed, result.reason) == (False, "exit status 2: database down")
    assert (await probe("exec:sh -c 'exit 1'")).reason == "exit status 1"


async def test_exec_killed_by_signal() -> None:
    """A command ended by a signal says which."""
    result = await probe("exec:sh -c 'kill -TERM $$'")
    assert (result.passed, result.reason) == (False, "killed by signal 15 (SIGTERM)")


async def test_exec_command_not_found() -> None:
    """A missing executable fails, naming it."""
    result = await probe("exec:/nonexistent/healthcheck --quiet")
    assert (result.passed, result.reason) == (False, "command not found: /nonexistent/healthcheck")


async def test_exec_hang_is_killed_with_its_group() -> None:
    """A hanging command is killed at the timeout, with everything in its process group."""
    runner = SubprocessExecRunner()
    started = time.monotonic()
    outcome = await runner(["sh", "-c", "sleep 60 & echo $!; echo $$; wait"], TIMEOUT)
    assert time.monotonic() - started < TIMEOUT + 2
    assert outcome.returncode is None
    pids = [int(line) for line in outcome.output.split()]
    assert len(pids) == 2
    await until(lambda: all(process_gone(pid) for pid in pids))
    result = await probe("exec:sh -c 'sleep 60'", TIMEOUT)
    assert (result.passed, result.reason) == (False, "timed out after 300ms")


async def test_exec_leftovers_die_with_the_command() -> None:
    """A command that exits leaving a background child returns at once; the child is killed."""
    started = time.monotonic()
    outcome = await SubprocessExecRunner()(["sh", "-c", "sleep 60 & echo $!"], 10.0)
    assert time.monotonic() - started < 5
    assert outcome.returncode == 0
    leftover = int(outcome.output)
    await until(lambda: process_gone(leftover))


async def test_exec_cancelled_probe_kills_the_group(tmp_path: Path) -> None:
    """Cancelling a probe in flight kills its process group too."""
    pidfile = tmp_path / "pids"
    command = f"exec:sh -c 'sleep 60 & echo $! $$ > {pidfile}; wait'"
    task = asyncio.ensure_future(probe(command, 30.0))
    await until(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pids = [int(word) for word in pidfile.read_text().split()]
    await until(lambda: all(process_gone(pid) for pid in pids))


async def test_exec_output_is_bounded() -> None:
    """Output beyond the limit is read and dropped; the command is not blocked by it."""
    outcome = await SubprocessExecRunner(output_limit=4096)(
        ["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; exit 3"], 10.0
    )
    assert outcome.returncode == 3
    assert outcome.output == b"x" * 4096


async def test_exec_runner_is_swappable() -> None:
    """The engine's own runner is used when given; the argv reaches it as parsed."""
    calls: list[tuple[tuple[str, ...], float]] = []

    async def runner(argv: Sequence[str], timeout: float) -> ExecOutcome:
        calls.append((tuple(argv), timeout))
        return ExecOutcome(returncode=1, output=b"not yet\n")

    result = await run_probe(parse_probe("exec:check 'a b'"), 1.5, exec_runner=runner)
    assert calls == [(("check", "a b"), 1.5)]
    assert result.reason == "exit status 1: not yet"


async def test_exec_runner_that_raises_is_a_failure() -> None:
    """A broken runner yields a failed result, never an exception."""

    async def runner(argv: Sequence[str], timeout: float) -> ExecOutcome:
        raise RuntimeError("runner broke")

    result = await run_probe(parse_probe("exec:true"), 1.0, exec_runner=runner)
    assert (result.passed, result.reason) == (False, "probe error: RuntimeError: runner broke")


# --- none ----------------------------------------------------------------------------------


async def test_none_passes() -> None:
    """The absent probe always passes."""
    result = await run_probe(ProbeSpec.none(), 1.0)
    assert (result.passed, result.reason) == (True, "no probe")


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "host", "port", "path"),
    [
        ("http://127.0.0.1:80/nginx-health", "http", "127.0.0.1", 80, "/nginx-health"),
        ("http://localhost/", "http", "localhost", 80, "/"),
        ("HTTP://Example.com:8080/a?b=c", "http", "example.com", 8080, "/a?b=c"),
        ("https://127.0.0.1", "https", "127.0.0.1", 443, ""),
        ("tcp://127.0.0.1:5432", "tcp", "127.0.0.1", 5432, ""),
        ("tcp://[::1]:5432/", "tcp", "::1", 5432, "/"),
        ("ws://127.0.0.1:8765/", "ws", "127.0.0.1", 8765, "/"),
        ("ws://127.0.0.1", "ws", "127.0.0.1", 80, ""),
    ],
)
def test_parse_urls(text: str, kind: str, host: str, port: int, path: str) -> None:
    """URL probes keep scheme, host, port (defaulted by scheme) and path with query."""
    spec = parse_probe(text)
    assert (spec.kind, spec.host, spec.port, spec.path, spec.text) == (kind, host, port, path, text)


def test_parse_exec_and_none() -> None:
    """exec: splits like a shell; none is the absent probe."""
    assert parse_probe("exec:pg_isready -h '/run/a b'").argv == ("pg_isready", "-h", "/run/a b")
    assert parse_probe(" None ") == ProbeSpec.none()


def test_url_property() -> None:
    """The URL to fetch is rebuilt from the parsed parts, IPv6 in brackets."""
    assert parse_probe("http://[::1]:81/x").url == "http://[::1]:81/x"
    assert parse_probe("ws://127.0.0.1:8765").url == "ws://127.0.0.1:8765/"
    assert parse_probe("tcp://127.0.0.1:1").url is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty probe"),
        ("ftp://host/", "unknown probe scheme 'ftp'"),
        ("wss://127.0.0.1/", "wss:// is not supported"),
        ("127.0.0.1:80", "not a probe"),
        ("http://", "missing host"),
        ("http://:80/", "missing host"),
        ("tcp://127.0.0.1", "missing port"),
        ("tcp://127.0.0.1:0", "port 0 is out of range"),
        ("http://127.0.0.1:65536/", "port 65536 is out of range"),
        ("http://127.0.0.1:http/", "must be a number"),
        ("tcp://127.0.0.1:80/path", "only host and port"),
        ("http://[::1/", "IPv6"),
        ("http://user:secret@127.0.0.1/", "credentials"),
        ("http://bad_host!/", "not a host name"),
        ("http://127.0.0.1/a b", "spaces"),
        ("exec:", "needs a command"),
        ("exec:   ", "needs a command"),
        ("exec:''", "needs a command"),
        ("exec:sh -c 'exit 1", "No closing quotation"),
    ],
)
def test_parse_rejects(text: str, words: str) -> None:
    """Each malformed probe is a ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=words):
        parse_probe(text)


PROBE_TEXT = st.one_of(
    st.text(max_size=80),
    st.builds(
        str.__add__,
        st.sampled_from(["http://", "https://", "tcp://", "ws://", "wss://", "exec:", "none"]),
        st.text(max_size=60),
    ),
    st.builds(
        "{}://{}:{}{}".format,
        st.sampled_from(["http", "tcp", "ws"]),
        st.sampled_from(["127.0.0.1", "[::1]", "localhost", "", "[", "a..b"]),
        st.integers(min_value=-5, max_value=70000).map(str) | st.text(max_size=6),
        st.text(max_size=20),
    ),
)


@given(PROBE_TEXT)
def test_arbitrary_probe_text_parses_or_raises_value_error(text: str) -> None:
    """Any text is a well-formed ProbeSpec or a ValueError with a message, nothing else."""
    try:
        spec = parse_probe(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert spec.kind in PROBE_KINDS
    if spec.kind == "exec":
        assert spec.argv
    elif spec.kind != "none":
        assert spec.host
        assert spec.port is not None and 1 <= spec.port <= 65535


# --- the loop ------------------------------------------------------------------------------


class Results:
    """Collects a ProbeLoop's results and lets a test await the next ones."""

    def __init__(self) -> None:
        self.all: list[ProbeResult] = []
        self.queue: asyncio.Queue[ProbeResult] = asyncio.Queue()

    def __call__(self, result: ProbeResult) -> None:
        self.all.append(result)
        self.queue.put_nowait(result)

    async def next(self, within: float = 5.0) -> ProbeResult:
        async with asyncio.timeout(within):
            return await self.queue.get()


@pytest.fixture
async def loops() -> AsyncIterator[list[ProbeLoop]]:
    """Every loop a test makes is stopped at its end."""
    made: list[ProbeLoop] = []
    yield made
    for loop in made:
        await loop.stop()


def make_loop(loops: list[ProbeLoop], text: str, *args: object, **kwargs: object) -> ProbeLoop:
    loop = ProbeLoop(parse_probe(text), *args, **kwargs)  # type: ignore[arg-type]
    loops.append(loop)
    return loop


class VirtualTime:
    """A clock that moves only when a probe loop (or a stand-in command) sleeps: each sleep
    advances it by exactly the delay asked for, so a cadence is checked to the millisecond
    without waiting for it. `at(t, action)` runs `action` once the clock reaches `t`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.start = start
        self.now = start
        self._due: list[tuple[float, Callable[[], None]]] = []

    def clock(self) -> float:
        return self.now

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._due.append((when, action))

    async def sleep(self, delay: float) -> None:
        self.now += delay
        due = [item for item in self._due if item[0] <= self.now]
        self._due = [item for item in self._due if item[0] > self.now]
        for _, action in due:
            action()
        await asyncio.sleep(0)  # let the test and the servers run, as a real sleep would


def virtual_loop(loops: list[ProbeLoop], time_: VirtualTime, text: str, *args: object,
                 **kwargs: object) -> ProbeLoop:
    return make_loop(loops, text, *args, clock=time_.clock, sleep=time_.sleep, **kwargs)


def gaps_between(results: Results) -> list[float]:
    """Milliseconds between consecutive results, rounded off float noise."""
    return [round((later.at - earlier.at) * 1000, 3)
            for earlier, later in itertools.pairwise(results.all)]


async def test_loop_first_probe_is_quick(loops: list[ProbeLoop], silent_port: int) -> None:
    """The first probe runs right after start, not an interval later."""
    time_ = VirtualTime()
    results = Results()
    loop = virtual_loop(loops, time_, f"tcp://127.0.0.1:{silent_port}", 30.0, 1.0, results)
    loop.start()
    first = await results.next()
    assert first.passed
    assert first.at == time_.start
    assert loop.last is first


async def test_loop_finds_a_late_starter_fast(
    loops: list[ProbeLoop], closed_socket: socket.socket
) -> None:
    """While failing at startup the probe retries fast, so a service up after 300 ms is seen
    within one fast gap (50 ms) even with a 30 s interval."""
    time_ = VirtualTime()
    opened = time_.start + 0.3  # the service's own startup time
    time_.at(opened, lambda: closed_socket.listen(8))
    results = Results()
    port = closed_socket.getsockname()[1]
    loop = virtual_loop(loops, time_, f"tcp://127.0.0.1:{port}", 30.0, 1.0, results)
    loop.start()
    while not (passed := await results.next()).passed:
        pass
    assert opened <= passed.at <= opened + 0.05
    assert loop.consecutive_failures == 0
    assert loop.consecutive_successes == 1


async def test_loop_failing_cadence_grows_to_interval(
    loops: list[ProbeLoop], refused_port: int
) -> None:
    """Failing probes start 50 ms apart, the gap doubles, and it stops growing at interval."""
    time_ = VirtualTime()
    results = Results()
    loop = virtual_loop(loops, time_, f"tcp://127.0.0.1:{refused_port}", 0.4, 0.2, results,
                        fast_window=0.0, quick_window=0.0)
    loop.start()
    for _ in range(7):
        await results.next()
    assert gaps_between(results) == [50, 100, 200, 400, 400, 400]
    assert loop.consecutive_failures == 7
    assert loop.last is not None and loop.last.reason == "connection refused"


async def test_loop_retries_a_refused_port_quickly(
    loops: list[ProbeLoop], closed_socket: socket.socket
) -> None:
    """While a loopback port refuses connections the probe retries every 10 ms (a bare
    connect, no HTTP), so the port opening is seen within 10 ms; the refusals are reported no
    more often than the fast probes would run (every 50 ms), so counters and metrics do not
    take a hundred failures a second."""
    time_ = VirtualTime()
    opened = time_.start + 0.333
    time_.at(opened, lambda: closed_socket.listen(8))  # accepts, never answers
    results = Results()
    port = closed_socket.getsockname()[1]
    loop = virtual_loop(loops, time_, f"http://127.0.0.1:{port}/", 30.0, 0.2, results)
    loop.start()
    while (last := await results.next()).reason == "connection refused":
        pass
    refusals = results.all[:-1]
    assert len(refusals) >= 4
    assert all(50 <= gap <= 60 for gap in gaps_between(results)[:len(refusals) - 1])
    assert last.reason == "timed out after 200ms"  # the real HTTP probe ran at last
    assert opened <= last.at <= opened + 0.01  # the opening seen at the next quick retry


def test_refused_at_once_only_for_this_pods_ip_ports(closed_socket: socket.socket) -> None:
    """A refused loopback port is known at once; a listening one, a host name, a remote
    address or an exec probe is left to the real probe."""
    port = closed_socket.getsockname()[1]
    for text in (f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/",
                 f"tcp://127.0.0.1:{port}"):
        assert refused_at_once(parse_probe(text)), text
    for text in (f"http://localhost:{port}/", "http://192.0.2.1:80/", "exec:true", "none"):
        assert not refused_at_once(parse_probe(text)), text
    closed_socket.listen(8)
    assert not refused_at_once(parse_probe(f"http://127.0.0.1:{port}/"))


async def test_loop_probes_fast_for_the_first_window(
    loops: list[ProbeLoop], refused_port: int
) -> None:
    """Inside the fast window failing probes come 10, 20, 40 ms apart, then keep the 50 ms
    cadence (a respawn up in a few hundred milliseconds is seen within one fast gap); after
    the window the gap doubles."""
    time_ = VirtualTime()
    results = Results()
    loop = virtual_loop(loops, time_, f"tcp://127.0.0.1:{refused_port}", 5.0, 0.2, results,
                        fast_window=0.3, quick_window=0.0)
    loop.start()
    for _ in range(12):
        await results.next()
    assert gaps_between(results) == [10, 20, 40, 50, 50, 50, 50, 50, 50, 100, 200]


async def test_loop_settles_to_interval_after_a_pass(
    loops: list[ProbeLoop], silent_port: int
) -> None:
    """Once passed, the probe runs every interval."""
    time_ = VirtualTime()
    results = Results()
    virtual_loop(loops, time_, f"tcp://127.0.0.1:{silent_port}", 0.25, 0.2, results).start()
    for _ in range(4):
        assert (await results.next()).passed
    assert gaps_between(results) == [250, 250, 250]


async def test_loop_failed_result_is_not_a_pass(loops: list[ProbeLoop], refused_port: int) -> None:
    """A failed probe counts as a failure and is the loop's latest result."""
    results = Results()
    loop = make_loop(loops, f"tcp://127.0.0.1:{refused_port}", 5.0, 1.0, results)
    loop.start()
    first = await results.next()
    assert loop.last is first and not first.passed
    assert (loop.consecutive_failures, loop.consecutive_successes) == (1, 0)


async def test_loop_never_overlaps_itself(loops: list[ProbeLoop]) -> None:
    """A probe slower than the interval delays the next one instead of running beside it."""
    time_ = VirtualTime()
    in_flight = 0
    most = 0
    results = Results()

    async def slow_runner(argv: Sequence[str], timeout: float) -> ExecOutcome:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await time_.sleep(0.1)  # the command's own run time
        in_flight -= 1
        return ExecOutcome(returncode=0)

    loop = virtual_loop(loops, time_, "exec:slow", 0.02, 1.0, results, exec_runner=slow_runner)
    loop.start()
    for _ in range(4):
        await results.next()
    assert most == 1
    assert gaps_between(results) == [100, 100, 100]  # each began when the one before ended


async def test_loop_hanging_probe_blocks_nothing(
    loops: list[ProbeLoop], server: Web, silent_port: int
) -> None:
    """A probe that hangs is cut at its timeout again and again while another keeps running."""
    hanging, healthy = Results(), Results()
    make_loop(loops, f"http://127.0.0.1:{silent_port}/", 0.2, 0.2, hanging).start()
    make_loop(loops, f"{server.base}/ok", 0.05, 1.0, healthy).start()
    first_timeout = await hanging.next()
    assert first_timeout.reason == "timed out after 200ms"
    assert len(healthy.all) >= 2  # kept going while the other hung
    second = await hanging.next()
    assert not second.passed


async def test_loop_stop_kills_exec_in_flight(loops: list[ProbeLoop], tmp_path: Path) -> None:
    """stop() cancels a running exec probe and its process group dies."""
    pidfile = tmp_path / "pids"
    loop = make_loop(loops, f"exec:sh -c 'sleep 60 & echo $! $$ > {pidfile}; wait'", 5.0, 30.0)
    loop.start()
    await until(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2)
    await loop.stop()
    runs = loop.runs
    pids = [int(word) for word in pidfile.read_text().split()]
    await until(lambda: all(process_gone(pid) for pid in pids))
    await loop.stop()  # twice is fine
    assert loop.runs == runs  # nothing probed after the stop


async def test_loop_closes_the_session_it_made(loops: list[ProbeLoop], server: Web) -> None:
    """The loop's own session is made once, reused, and closed on stop."""
    made: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        made.append(session)
        return session

    results = Results()
    loop = make_loop(loops, f"{server.base}/ok", 0.05, 1.0, results, session_factory=factory)
    loop.start()
    for _ in range(3):
        assert (await results.next()).passed
    await loop.stop()
    assert len(made) == 1
    assert made[0].closed


async def test_loop_listener_error_does_not_stop_probing(loops: list[ProbeLoop]) -> None:
    """An on_result callback that raises is logged; probing goes on."""
    calls = 0
    second = asyncio.Event()

    def flaky(result: ProbeResult) -> None:
        nonlocal calls
        calls += 1
        if calls >= 2:
            second.set()
        raise RuntimeError("listener bug")

    loop = make_loop(loops, "exec:true", 0.02, 1.0, flaky, exec_runner=_instant_runner)
    loop.start()
    async with asyncio.timeout(5):
        await second.wait()  # the first callback raised, and still the next probe ran
    assert loop.runs >= 2


async def _instant_runner(argv: Sequence[str], timeout: float) -> ExecOutcome:
    return ExecOutcome(returncode=0)


def test_loop_rejects_non_positive_interval() -> None:
    """An interval or timeout of 0 is a programming error, caught at construction."""
    with pytest.raises(ValueError, match="must be more than 0"):
        ProbeLoop(ProbeSpec.none(), 0.0, 1.0)


async def test_loop_start_twice_is_an_error(loops: list[ProbeLoop]) -> None:
    """A loop starts once."""
    loop = ProbeLoop(ProbeSpec.none(), 1.0, 1.0)
    loops.append(loop)
    loop.start()
    with pytest.raises(RuntimeError):
        loop.start()


def test_importing_probes_does_not_import_aiohttp() -> None:
    """The engine parses the catalogue before its first spawn without paying for aiohttp."""
    code = (
        "import sys, healthz.probes, healthz.spec, healthz.durations\n"
        "assert 'aiohttp' not in sys.modules, 'aiohttp imported'\n"
        "healthz.spec.parse_health_section({'ready': 'http://127.0.0.1:1/'})\n"
        "assert 'aiohttp' not in sys.modules, 'aiohttp imported by parsing'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
