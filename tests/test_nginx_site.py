"""The pod's nginx site, run with the real nginx and checked with the real curl.

The configuration under test is the real one (demo/nginx.conf and deploy/nginx/*.conf): it is
copied into a temporary directory with only its ports changed, so the tests never collide with
a demo pod running on this machine and the files in the checkout stay the source of truth.
The last test runs it inside the demo pod itself, against the stand-ins, on the demo's ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests import demo_support
from tests.demo_support import running_demo
from tests.support import ROOT, free_port, http_get

DEMO_CONF = ROOT / "demo" / "nginx.conf"
DEPLOY_NGINX = ROOT / "deploy" / "nginx"
FRONTEND = ROOT / "demo" / "frontend"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
CURL = shutil.which("curl")
IS_ROOT = os.geteuid() == 0
UNPRIVILEGED = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]

pytestmark = pytest.mark.skipif(NGINX is None or CURL is None, reason="needs nginx and curl")

# The ports written in the real files, each replaced in the rendered copy. Every one must be
# found exactly once, so a change to the files cannot leave a test quietly using the defaults.
PORT_TEXT = {
    "listen": "listen 127.0.0.1:8000 ",
    "health": "server 127.0.0.1:8081;",
    "theia": "server 127.0.0.1:3000;",
    "api": "server 127.0.0.1:8080;",
    "codi2": "server 127.0.0.1:8765;",
}


def nginx_command(prefix: Path, conf: Path, *extra: str) -> list[str]:
    assert NGINX is not None
    return [NGINX, "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr", *extra]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory that `nobody` can use too (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="coditect-nginx-"))
    path.chmod(0o755)
    if IS_ROOT:
        nobody = pwd.getpwnam("nobody")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    yield path
    shutil.rmtree(path)


def render(dest: Path, ports: dict[str, int]) -> Path:
    """Copy the real nginx files into `dest` (same layout, so relative includes hold) with the
    ports in PORT_TEXT replaced; return the demo main config's path."""
    sources = [DEMO_CONF, *sorted(DEPLOY_NGINX.glob("*.conf"))]
    texts = {src: src.read_text() for src in sources}
    for role, text in PORT_TEXT.items():
        hits = sum(body.count(text) for body in texts.values())
        assert hits == 1, f"{text!r} found {hits} times in the nginx files"
        new = re.sub(r"\d+(?=[ ;]$)", str(ports[role]), text)
        texts = {src: body.replace(text, new) for src, body in texts.items()}
    for src, body in texts.items():
        target = dest / src.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    return dest / DEMO_CONF.relative_to(ROOT)


def meaningful_lines(conf: Path) -> list[str]:
    """The directives of a config, without comments, blank lines or include directories."""
    lines = (line.split("#", 1)[0].strip() for line in conf.read_text().splitlines())
    return [re.sub(r"^include \S*/", "include ", line) for line in lines if line]


def test_demo_differs_from_production_only_in_its_port_and_root() -> None:
    """The demo reuses production's nginx files: its main config changes the listen line and the
    static frontend's root only."""
    demo = meaningful_lines(DEMO_CONF)
    production = meaningful_lines(DEPLOY_NGINX / "nginx.conf")
    assert "listen 127.0.0.1:8000 default_server;" in demo
    assert "listen 8000 default_server;" in production
    assert "root frontend;" in demo  # <prefix>/frontend, linked to demo/frontend by the overlay
    assert "root /app/frontend;" in production
    differing = ("listen ", "root ")
    assert [ln for ln in demo if not ln.startswith(differing)] == [
        ln for ln in production if not ln.startswith(differing)
    ]


@pytest.mark.parametrize("user", ["self", "nobody"])
def test_demo_config_is_valid(scratch: Path, user: str) -> None:
    """`nginx -t` accepts the real demo config in a fresh prefix, also for an unprivileged user:
    nothing outside the prefix has to be writable."""
    if user == "nobody" and not IS_ROOT:
        pytest.skip("switching to nobody needs root")
    prefix = scratch / "prefix"
    prefix.mkdir()
    wrapper = []
    if user == "nobody":
        shutil.chown(prefix, "nobody", "nogroup")
        wrapper = UNPRIVILEGED
    result = subprocess.run(
        [*wrapper, *nginx_command(prefix, DEMO_CONF, "-t")],
        # /dev/stdout (the access log) is reopened by nginx: it must be a file its user may
        # open, which the pipe of a root pytest is not for nobody. The supervisor's pipes are.
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_production_config_is_valid(scratch: Path) -> None:
    """`nginx -t` accepts production's config (it binds its unprivileged port to check it)."""
    result = subprocess.run(
        nginx_command(scratch, DEPLOY_NGINX / "nginx.conf", "-t"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


BIG_BODY = bytes(range(256)) * (12 * 4096)  # 12 MiB, Theia's bundle.js is 11.5 MiB


@dataclass
class Upstreams:
    """In-process stand-ins for the services behind nginx, each on its own port."""

    ports: dict[str, int]
    health_status: int
    health_runner: web.AppRunner


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port: int = runner.addresses[0][1]
    return runner, port


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    async def health(request: web.Request) -> web.Response:
        status = state.health_status
        return web.json_response(
            {"status": "pass" if status == 200 else "fail"},
            status=status,
            content_type="application/health+json",
        )

    async def theia(request: web.Request) -> web.StreamResponse:
        if request.path == "/services":  # Theia's WebSocket endpoint
            return await echo(request)
        if request.path == "/bundle.js":  # as big as Theia's: nginx spools it to a temp file
            return web.Response(body=BIG_BODY, content_type="application/javascript")
        if request.path == "/headers":
            return web.json_response({k.lower(): v for k, v in request.headers.items()})
        return web.Response(text=f"<html>theia {request.path}</html>", content_type="text/html")

    async def api(request: web.Request) -> web.Response:
        return web.json_response({"status": "healthy", "path": request.path})

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(f"ack:{msg.data}")
        return ws

    routes = {
        "health": ("/health", health),
        "theia": ("/{tail:.*}", theia),
        "api": ("/api/v5/health", api),
        "codi2": ("/", echo),
    }
    runners: dict[str, web.AppRunner] = {}
    ports: dict[str, int] = {}
    for role, (path, handler) in routes.items():
        app = web.Application()
        app.router.add_get(path, handler)
        runners[role], ports[role] = await _serve(app)
    state = Upstreams(ports=ports, health_status=200, health_runner=runners["health"])
    yield state
    for runner in runners.values():
        await runner.cleanup()


@dataclass
class Nginx:
    url: str
    stdout: Path
    process: asyncio.subprocess.Process


@pytest.fixture(params=["self", "nobody"])
async def nginx(
    request: pytest.FixtureRequest, scratch: Path, upstreams: Upstreams
) -> AsyncIterator[Nginx]:
    """The real nginx running the rendered demo config in the foreground, as the supervisor
    runs it; as root, also as `nobody` to show no privilege is needed."""
    unprivileged = request.param == "nobody"
    if unprivileged and not IS_ROOT:
        pytest.skip("switching to nobody needs root")
    listen = free_port()
    conf = render(scratch / "conf", {"listen": listen, **upstreams.ports})
    prefix = scratch / "prefix"
    prefix.mkdir()
    stdout = prefix / "stdout.log"
    stdout.touch()
    # The demo's `root frontend;` is relative to the prefix; a copy, so `nobody` may read it.
    shutil.copytree(FRONTEND, prefix / "frontend")
    if unprivileged:
        for path in (prefix, stdout, prefix / "frontend", *(prefix / "frontend").iterdir()):
            shutil.chown(path, "nobody", "nogroup")
    with stdout.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *(UNPRIVILEGED if unprivileged else []),
            *nginx_command(prefix, conf, "-g", "daemon off;"),
            stdout=out,
            stderr=asyncio.subprocess.PIPE,
        )
    server = Nginx(url=f"http://127.0.0.1:{listen}", stdout=stdout, process=process)
    try:
        await until_listening(server)
        yield server
    finally:
        await stop(process)


async def until_listening(server: Nginx, within: float = 15.0) -> None:
    """nginx does not say when it listens; ask it, under a deadline."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            if server.process.returncode is not None:
                assert server.process.stderr is not None
                err = (await server.process.stderr.read()).decode()
                pytest.fail(f"nginx exited {server.process.returncode}: {err}")
            try:
                async with session.get(f"{server.url}/nginx-health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"nginx not answering within {within} s")
            await asyncio.sleep(0.02)


async def stop(process: asyncio.subprocess.Process) -> None:
    """Graceful quit by the master's pid; SIGKILL only if it overstays."""
    if process.returncode is None:
        process.send_signal(signal.SIGQUIT)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def curl_f(url: str) -> int:
    """The image's HEALTHCHECK, `curl -f`: its exit code. Run without blocking the loop that
    also serves the upstreams."""
    assert CURL is not None
    proc = await asyncio.create_subprocess_exec(
        CURL, "-f", "-sS", "-o", os.devnull, "--max-time", "10", url,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await proc.wait()


async def test_nginx_health_is_nginx_alone(nginx: Nginx, upstreams: Upstreams) -> None:
    """/nginx-health is answered by nginx itself, whatever the health service says."""
    upstreams.health_status = 503
    assert await curl_f(f"{nginx.url}/nginx-health") == 0
    async with aiohttp.ClientSession() as session, session.get(f"{nginx.url}/nginx-health") as r:
        assert (await r.text()).strip() == "ok"


async def test_health_passes_the_aggregate_through(nginx: Nginx, upstreams: Upstreams) -> None:
    """`curl -f /health` passes while the aggregate is 200, fails when it is 503 and when the
    health service is gone, so the HEALTHCHECK tells the truth."""
    assert await curl_f(f"{nginx.url}/health") == 0
    upstreams.health_status = 503
    assert await curl_f(f"{nginx.url}/health") == 22  # curl -f: HTTP status >= 400
    upstreams.health_status = 200
    assert await curl_f(f"{nginx.url}/health") == 0
    await upstreams.health_runner.cleanup()
    assert await curl_f(f"{nginx.url}/health") == 22  # 502 from nginx


async def test_root_is_the_static_frontend(nginx: Nginx) -> None:
    """`/` is the static frontend with its assets' content types; an unknown path is one of its
    client-side routes (index.html); index.html is never cached."""
    index = (FRONTEND / "index.html").read_text()
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/index.html", "/projects/42/settings"):
            async with session.get(f"{nginx.url}{path}") as resp:
                assert resp.status == 200, path
                assert resp.content_type == "text/html", path
                assert await resp.text() == index, path
                assert resp.headers["Cache-Control"] == "no-cache", path
        for name, content_type in (("style.css", "text/css"),
                                   ("app.js", "application/javascript")):
            async with session.get(f"{nginx.url}/{name}") as resp:
                assert resp.status == 200, name
                assert resp.content_type == content_type, name
                assert await resp.text() == (FRONTEND / name).read_text()
                assert "Cache-Control" not in resp.headers, name


async def test_theia_is_under_its_prefix_with_websockets(nginx: Nginx) -> None:
    """`/theia/x` reaches Theia as `/x`, `/theia` redirects to `/theia/`, and Theia's WebSocket
    upgrade passes through."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{nginx.url}/theia/") as resp:
            assert resp.status == 200
            assert await resp.text() == "<html>theia /</html>"
        async with session.get(f"{nginx.url}/theia", allow_redirects=False) as resp:
            assert resp.status == 301
            assert resp.headers["Location"] == "/theia/"  # relative: right behind a proxy
        async with session.ws_connect(f"{nginx.url}/theia/services", autoping=False) as ws:
            await _ping_and_echo(ws, "open-workspace")


async def _ping_and_echo(ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
    """Through the proxy both ways: a ping answered by a pong, a message by the stand-in's
    acknowledgement of it."""
    await ws.ping(b"x")
    pong = await ws.receive(timeout=5)
    assert pong.type is aiohttp.WSMsgType.PONG
    await ws.send_str(text)
    assert await ws.receive_str(timeout=5) == f"ack:{text}"


async def test_routes_reach_their_services(nginx: Nginx) -> None:
    """`/api/v5/` is the API, `/codi2/` codi2's WebSocket (upgrade passed through); probes stay
    out of the access log, other requests are in it."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{nginx.url}/api/v5/health") as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "healthy", "path": "/api/v5/health"}
        async with session.ws_connect(f"{nginx.url}/codi2/", autoping=False) as ws:
            await _ping_and_echo(ws, "audit")
    log = nginx.stdout.read_text()
    assert '"GET /api/v5/health HTTP/1.1" 200' in log
    assert "/nginx-health" not in log


def test_site_in_the_demo_pod() -> None:
    """The demo pod's own nginx (the real site, started by the engine through the overlay)
    serves every route from its stand-ins: the frontend, Theia, the API and /health, the
    aggregate of the pod's health service."""
    with running_demo("coditect-nginx-site-") as demo:
        demo.wait_running("nginx", "theia")
        status, body = http_get(f"{demo_support.NGINX}/")
        assert (status, body) == (200, (FRONTEND / "index.html").read_text())
        status, body = http_get(f"{demo_support.NGINX}/theia/")
        assert status == 200 and "stand-in for Eclipse Theia" in body
        status, body = http_get(f"{demo_support.NGINX}/api/v5/health")
        assert status == 200
        status, body = http_get(f"{demo_support.NGINX}/health")
        assert status == 200 and json.loads(body)["status"] in ("pass", "warn")
        # The image's HEALTHCHECK, as Docker runs it.
        assert demo_support.curl_f(f"{demo_support.NGINX}/health") == 0


async def test_a_big_response_arrives_whole_to_a_slow_reader(nginx: Nginx) -> None:
    """A 12 MiB response read slowly is spooled by nginx's worker to its temp directory and
    arrives whole, nginx run as root (workers as nobody) and as nobody."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(nginx.url.rsplit(":", 1)[1]))
    try:
        writer.write(b"GET /theia/bundle.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1.0)  # the upstream has sent it all; nginx holds it on disk
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert len(body) == len(BIG_BODY) and body == BIG_BODY


@pytest.mark.parametrize("forwarded", [False, True])
async def test_theia_gets_the_host_the_browser_used(nginx: Nginx, forwarded: bool) -> None:
    """Theia compares Origin with Host: the Host it gets keeps the port the browser used
    (direct, or `kubectl port-forward` to another port); behind an ingress, X-Forwarded-Host
    and -Proto are the browser's."""
    headers = {"Host": "127.0.0.1:18080"}
    if forwarded:
        headers.update({"X-Forwarded-Host": "ide.example.com", "X-Forwarded-Proto": "https"})
    async with (aiohttp.ClientSession() as session,
                session.get(f"{nginx.url}/theia/headers", headers=headers) as resp):
        seen = await resp.json()
    if forwarded:
        assert (seen["host"], seen["x-forwarded-proto"]) == ("ide.example.com", "https")
    else:
        assert (seen["host"], seen["x-forwarded-proto"]) == ("127.0.0.1:18080", "http")
    assert seen["x-forwarded-host"] == seen["host"]
