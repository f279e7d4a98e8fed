"""The control socket: its file, who may connect, and the /v1 routes of docs/CONTROL_API.md,
served by a real HealthServer with a scripted engine behind it."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import healthz.server
from bench.wait import until
from healthz.metrics import PodMetrics
from healthz.model import CatalogueCheck, State
from healthz.podctl_errors import PodctlError, check_name
from healthz.server import HealthServer, bind_unix, parse_addr
from tests.health_support import (
    Faces,
    FakePod,
    default_pod_services,
    running_faces,
    unix_session,
)


@pytest.fixture
def pod() -> FakePod:
    pod = FakePod(default_pod_services())
    pod.all_ready()
    return pod


async def call(faces: Faces, method: str, path: str) -> tuple[int, Any]:
    async with faces.unix.request(method, "http://pod" + path) as resp:
        assert resp.headers["Content-Type"].startswith("application/json"), path
        return resp.status, await resp.json()


# -- the socket file


async def test_socket_is_0600_in_a_0700_directory(pod: FakePod, tmp_path: Path) -> None:
    """The socket exists with mode 0600; its missing directory is created 0700."""
    async with running_faces(pod, tmp_path) as faces:
        st = os.lstat(faces.socket_path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(faces.socket_path.parent).st_mode) == 0o700
    assert not faces.socket_path.exists()  # stop() removes it


def test_socket_mode_does_not_depend_on_umask(tmp_path: Path) -> None:
    """Even under umask 000 the socket is born 0600 (no chmod afterwards, so no window)."""
    old = os.umask(0)
    try:
        sock = bind_unix(tmp_path / "open.sock")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.lstat(tmp_path / "open.sock").st_mode) == 0o600
        assert os.umask(old) == old  # the umask was put back
    finally:
        sock.close()


async def test_stale_socket_is_replaced_live_one_is_not(pod: FakePod, tmp_path: Path) -> None:
    """A socket nobody listens on is taken over; one a live pod serves is refused."""
    path = tmp_path / "run" / "podctl.sock"
    path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays behind, as after a kill -9
    async with running_faces(pod, tmp_path) as faces:
        assert (await faces.get("unix", "/readyz"))[0] == 200
        second = HealthServer(pod, PodMetrics(pod), tcp_addr=None, unix_path=path)
        with pytest.raises(OSError, match="another process is serving") as info:
            await second.start()
        assert info.value.errno == errno.EADDRINUSE
        assert (await faces.get("unix", "/readyz"))[0] == 200  # still the first one's


async def test_a_regular_file_is_not_removed(pod: FakePod, tmp_path: Path) -> None:
    """A file that is not a socket where the socket should go is an error, left alone."""
    path = tmp_path / "podctl.sock"
    path.write_text("not mine")
    server = HealthServer(pod, PodMetrics(pod), tcp_addr=None, unix_path=path)
    with pytest.raises(FileExistsError):
        await server.start()
    assert path.read_text() == "not mine"


def _python_for_nobody() -> str | None:
    # The test venv's interpreter may live under /root, which nobody cannot reach.
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
def world_traversable_dir() -> Iterator[Path]:
    """A directory any user can reach, so only the socket's own mode can refuse them."""
    path = Path(tempfile.mkdtemp(prefix="podctl-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")
async def test_another_user_is_refused(pod: FakePod, world_traversable_dir: Path) -> None:
    """User `nobody` connecting to the socket gets EACCES; the owner gets in."""
    python = _python_for_nobody()
    if shutil.which("setpriv") is None or python is None:
        pytest.skip("needs setpriv and a system python3")
    path = world_traversable_dir / "podctl.sock"
    connect = (
        "import errno, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(path)!r})\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno]); sys.exit(0)\n"
        "print('CONNECTED')\n"
    )
    server = HealthServer(pod, PodMetrics(pod), tcp_addr=None, unix_path=path)
    async with server:
        # The directory here already exists (0755), so the socket's mode alone must refuse.
        child = await asyncio.create_subprocess_exec(
            "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            python, "-c", connect, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(child.communicate(), timeout=20)
        assert child.returncode == 0, err
        assert out.decode().strip() == "EACCES"
        async with unix_session(path) as owner, owner.get("http://pod/readyz") as resp:
            assert resp.status == 200


def test_parse_addr() -> None:
    """HOST:PORT, [V6]:PORT and :PORT parse; malformed addresses are clear errors."""
    assert parse_addr("0.0.0.0:8081") == ("0.0.0.0", 8081)
    assert parse_addr("[::1]:8081") == ("::1", 8081)
    assert parse_addr(":9000") == ("0.0.0.0", 9000)
    assert parse_addr("localhost:0") == ("localhost", 0)
    for bad in ("8081", "::1:8081", "[::1]8081", "host:http", "host:70000", "[::1"):
        with pytest.raises(ValueError, match="bad address"):
            parse_addr(bad)


async def test_ipv6_loopback_port_zero(pod: FakePod) -> None:
    """`[::1]:0` binds an IPv6 port and reports it."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = HealthServer(pod, PodMetrics(pod), tcp_addr="[::1]:0")
    try:
        await server.start()
    except OSError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    try:
        assert server.tcp_port
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
            s.get(f"http://[::1]:{server.tcp_port}/readyz") as resp,
        ):
            assert resp.status == 200
    finally:
        await server.stop()


# -- the routes


async def test_status_lists_every_service(pod: FakePod, tmp_path: Path) -> None:
    """GET /v1/status has the documented keys; CPU and memory are null without a process."""
    pod.update("theia", restarts=2, restarts_by_reason={"liveness": 2}, last_exit="exit 1",
               last_exit_code=1)
    pod.update("codi2", state=State.STOPPED, pid=None, ready=False)
    async with running_faces(pod, tmp_path) as faces:
        status, doc = await call(faces, "GET", "/v1/status")
    assert status == 200
    assert set(doc) == {"services", "ready", "draining", "started_up", "booted_at",
                        "reload_errors", "home_problems", "notify_ignored", "seeding"}
    assert [s["name"] for s in doc["services"]] == list(pod.services)
    theia = doc["services"][0]
    assert set(theia) == {
        "name", "state", "critical", "ready", "live", "pid", "uptime_seconds", "restarts",
        "restarts_by_reason", "last_exit", "last_exit_code", "reason", "status", "cpu_percent",
        "rss_bytes", "transient", "kind", "failed",
    }
    assert (theia["kind"], theia["failed"]) == ("catalogue", False)
    assert set(doc["seeding"]) == set(theia)
    assert (doc["seeding"]["name"], doc["seeding"]["kind"]) == ("coditect-home", "task")
    assert theia["restarts_by_reason"] == {"liveness": 2}
    assert (theia["last_exit"], theia["last_exit_code"]) == ("exit 1", 1)
    codi2 = doc["services"][2]
    assert codi2["state"] == "stopped"
    assert codi2["uptime_seconds"] is codi2["cpu_percent"] is codi2["rss_bytes"] is None


async def test_status_measures_a_real_process_tree(pod: FakePod, tmp_path: Path) -> None:
    """cpu_percent and rss_bytes cover the service's processes; uptime counts from started_at."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        pod.update("theia", pid=child.pid, started_at=time.time() - 12)
        pod.pids["theia"] = [child.pid]
        async with running_faces(pod, tmp_path) as faces:
            _, doc = await call(faces, "GET", "/v1/status")
        theia = doc["services"][0]
        assert theia["pid"] == child.pid
        assert theia["rss_bytes"] > 1_000_000  # a Python interpreter
        assert theia["cpu_percent"] >= 0.0
        assert 11 < theia["uptime_seconds"] < 60
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


async def test_health_route(pod: FakePod, tmp_path: Path) -> None:
    """GET /v1/health gives the verdicts and every service's reason."""
    pod.update("codi2", ready=False, reason="no pong")
    async with running_faces(pod, tmp_path) as faces:
        status, doc = await call(faces, "GET", "/v1/health")
        assert status == 200
        assert (doc["ready"], doc["live"], doc["started_up"]) == (True, True, True)
        codi2 = next(s for s in doc["services"] if s["name"] == "codi2")
        assert codi2 == {"name": "codi2", "critical": False, "ready": False, "live": True,
                         "state": "running", "reason": "no pong"}
        pod.update("theia", ready=False)
        _, doc = await call(faces, "GET", "/v1/health")
        assert doc["ready"] is False


@pytest.mark.parametrize("verb", ["start", "stop", "restart"])
async def test_verbs_wait_for_the_outcome(pod: FakePod, tmp_path: Path, verb: str) -> None:
    """POST start/stop/restart call the engine and answer its message and the new status."""
    async with running_faces(pod, tmp_path) as faces:
        status, doc = await call(faces, "POST", f"/v1/services/codi2/{verb}")
    assert status == 200
    assert doc["ok"] is True
    assert doc["message"].startswith("codi2: ")
    assert doc["service"]["name"] == "codi2"
    assert [(c.verb, c.name) for c in pod.calls] == [(verb, "codi2")]
    if verb == "stop":
        assert doc["service"]["state"] == "stopped"


async def test_failed_verb_says_so(pod: FakePod, tmp_path: Path) -> None:
    """A verb the engine could not carry through answers ok=false with its reason."""
    pod.fail_with = "codi2 exited within startsecs (exit 1)"
    async with running_faces(pod, tmp_path) as faces:
        status, doc = await call(faces, "POST", "/v1/services/codi2/start")
    assert (status, doc["ok"]) == (200, False)
    assert doc["message"] == "codi2 exited within startsecs (exit 1)"


async def test_engine_bug_is_a_json_500(pod: FakePod, tmp_path: Path) -> None:
    """An unexpected exception from the engine answers 500 with its text, not a hang-up."""
    pod.crash = RuntimeError("boom")
    async with running_faces(pod, tmp_path) as faces:
        status, doc = await call(faces, "POST", "/v1/services/codi2/restart")
        assert (status, doc) == (500, {"error": "internal error: boom"})
        assert (await faces.get("unix", "/readyz"))[0] == 200  # and the socket still serves


async def test_signal_by_name_or_number(pod: FakePod, tmp_path: Path) -> None:
    """?signal= takes HUP, SIGUSR1, term or a number; anything else is 400."""
    async with running_faces(pod, tmp_path) as faces:
        for text, signum in (("HUP", 1), ("SIGUSR1", 10), ("term", 15), ("9", 9)):
            status, doc = await call(faces, "POST", f"/v1/services/theia/signal?signal={text}")
            assert (status, doc["ok"]) == (200, True), text
            assert pod.calls[-1].arg == signum
        for bad in ("NOPE", "0", "999", "", "SIG"):
            status, doc = await call(faces, "POST", f"/v1/services/theia/signal?signal={bad}")
            assert status == 400, bad
            assert "error" in doc
        status, doc = await call(faces, "POST", "/v1/services/theia/signal")
        assert status == 400
    assert len(pod.calls) == 4


async def test_names_are_checked_before_anything(pod: FakePod, tmp_path: Path) -> None:
    """Unknown names are 404, malformed ones (`..`, slashes, dot first) 400, no engine call."""
    async with running_faces(pod, tmp_path) as faces:
        status, doc = await call(faces, "POST", "/v1/services/nope/stop")
        assert (status, doc) == (404, {"error": "no service named 'nope'"})
        for bad in ("..", ".hidden", "..%2F..%2Fetc", "a%20b", "x" * 200):
            status, doc = await call(faces, "POST", f"/v1/services/{bad}/stop")
            assert status in (400, 404), bad  # 404 when the router itself finds no route
            assert "error" in doc
        status, _ = await call(faces, "POST", "/v1/services/../stop")
        assert status in (400, 404)
    assert pod.calls == []


NAMES_TO_AGREE_ON = ("-x", ".x", "x-", "x.", "_x", "9", "a.b-c_d", "x" * 128, "x" * 129, "a:b")


async def test_podctl_and_the_server_agree_on_names(pod: FakePod, tmp_path: Path) -> None:
    """A name podctl refuses (exit 2, no request) is one the server refuses (400), and one it
    lets through the server looks up (404 here): one rule, `healthz.names`, on both sides."""
    async with running_faces(pod, tmp_path) as faces:
        for name in NAMES_TO_AGREE_ON:
            try:
                check_name(name)
                podctl_refuses = False
            except PodctlError:
                podctl_refuses = True
            status, _ = await call(faces, "POST", f"/v1/services/{name}/stop")
            assert (status == 400) == podctl_refuses, name
            assert status in (400, 404), name
    assert pod.calls == []


async def test_wait_zero_answers_before_the_outcome(pod: FakePod, tmp_path: Path) -> None:
    """?wait=0 answers 202 while the engine still works; the verb then completes."""
    pod.gate = asyncio.Event()
    async with running_faces(pod, tmp_path) as faces:
        status, doc = await call(faces, "POST", "/v1/services/theia/stop?wait=0")
        assert status == 202
        assert doc["ok"] is True
        assert doc["service"]["state"] == "running"
        pod.gate.set()
        await _eventually_state(pod, "theia", State.STOPPED)
        status, doc = await call(faces, "POST", "/v1/services/theia/stop?wait=maybe")
        assert status == 400


async def _eventually_state(pod: FakePod, name: str, state: State) -> None:
    await until(lambda: pod.services[name].state == state, 5, f"{name} {state}")


async def test_hung_verb_does_not_delay_tcp_readyz(pod: FakePod, tmp_path: Path) -> None:
    """While a verb hangs on the socket, /readyz on TCP and /v1/status still answer."""
    pod.gate = asyncio.Event()
    async with running_faces(pod, tmp_path) as faces:
        hung = asyncio.create_task(call(faces, "POST", "/v1/services/theia/restart"))
        async with asyncio.timeout(5):
            while not pod.calls:
                await asyncio.sleep(0.01)
        assert await faces.get("tcp", "/readyz") == (200, "ok\n")
        assert (await call(faces, "GET", "/v1/status"))[0] == 200
        assert not hung.done()  # answered while the verb was still hung
        pod.gate.set()
        status, doc = await asyncio.wait_for(hung, timeout=5)
        assert (status, doc["ok"]) == (200, True)


async def test_client_giving_up_does_not_cancel_the_verb(pod: FakePod, tmp_path: Path) -> None:
    """A client that disconnects mid-verb leaves the engine's work to finish."""
    pod.gate = asyncio.Event()
    async with running_faces(pod, tmp_path) as faces:
        with pytest.raises(asyncio.TimeoutError):
            async with faces.unix.post(
                "http://pod/v1/services/theia/stop", timeout=aiohttp.ClientTimeout(total=0.3)
            ) as resp:
                await resp.read()
        pod.gate.set()
        await _eventually_state(pod, "theia", State.STOPPED)


async def test_reload(pod: FakePod, tmp_path: Path) -> None:
    """POST /v1/reload gives the engine's verdict and messages; wait=0 answers 202."""
    async with running_faces(pod, tmp_path) as faces:
        assert await call(faces, "POST", "/v1/reload") == (
            200, {"ok": True, "messages": ["no change"]}
        )
        pod.reload_answer = (False, ["conf.d/x.conf [program:x] startsecss: unknown key"])
        status, doc = await call(faces, "POST", "/v1/reload")
        assert (status, doc["ok"]) == (200, False)
        assert doc["messages"] == ["conf.d/x.conf [program:x] startsecss: unknown key"]
        status, doc = await call(faces, "POST", "/v1/reload?wait=0")
        assert (status, doc["ok"]) == (202, True)


async def test_check_gives_findings_only(pod: FakePod, tmp_path: Path) -> None:
    """GET /v1/check: the engine's findings on the catalogue it runs from, nothing else."""
    pod.check_answer = CatalogueCheck(
        valid=False, problems=("x.conf:3: [program:x] startsecs: expected a whole number of "
                               "seconds, got 'two'",),
        summary="catalogue invalid (1 problem)", catalogue="/cat", overlay="/over.conf")
    async with running_faces(pod, tmp_path) as faces:
        status, doc = await call(faces, "GET", "/v1/check")
    assert status == 200
    assert doc == {"valid": False, "ran": True, "problems": list(pod.check_answer.problems),
                   "warnings": [], "notes": [], "summary": "catalogue invalid (1 problem)",
                   "catalogue": "/cat", "overlay": "/over.conf"}


async def test_logs_route(pod: FakePod, tmp_path: Path) -> None:
    """GET /v1/logs/NAME: the last lines as bytes (reaching into `.1`); every refusal is
    JSON, a bad name or count before the file is looked for."""
    pod.logs_dir = tmp_path / "logs"
    pod.logs_dir.mkdir()
    (pod.logs_dir / "theia.log.1").write_bytes(b"one\ntwo\n")
    (pod.logs_dir / "theia.log").write_bytes(b"three\n\x1b[31mred\x00\n")
    async with running_faces(pod, tmp_path) as faces:
        async with faces.unix.get("http://pod/v1/logs/theia?lines=3") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/octet-stream"
            assert await resp.read() == b"two\nthree\n\x1b[31mred\x00\n"  # bytes as they are
        async with faces.unix.get("http://pod/v1/logs/theia") as resp:
            assert await resp.read() == b"one\ntwo\nthree\n\x1b[31mred\x00\n"
        async with faces.unix.get("http://pod/v1/logs/theia?lines=0") as resp:
            assert await resp.read() == b""
        assert await call(faces, "GET", "/v1/logs/-x") == (400, {"error": "bad service name '-x'"})
        status, doc = await call(faces, "GET", "/v1/logs/theia?lines=-1")
        assert status == 400 and doc["error"].startswith("lines must be a whole number")
        status, doc = await call(faces, "GET", "/v1/logs/theia?follow=maybe")
        assert (status, doc) == (400, {"error": "follow must be 0 or 1, not 'maybe'"})
        assert await call(faces, "GET", "/v1/logs/nosuch") == (
            404, {"error": "no service named 'nosuch'"})
        status, doc = await call(faces, "GET", "/v1/logs/nginx")
        assert status == 404 and doc["error"].startswith("no log for nginx yet at ")


async def test_a_followed_log_ends_when_the_listener_closes(
        pod: FakePod, tmp_path: Path) -> None:
    """A client following a quiet log does not hold the pod's shutdown."""
    pod.logs_dir = tmp_path / "logs"
    pod.logs_dir.mkdir()
    (pod.logs_dir / "theia.log").write_bytes(b"quiet\n")
    async with running_faces(pod, tmp_path) as faces:
        resp = await faces.unix.get("http://pod/v1/logs/theia?follow=1")
        assert await resp.content.readline() == b"quiet\n"
        began = time.monotonic()
        await faces.server.stop()
        assert time.monotonic() - began < 1.5  # not the 2 s shutdown timeout
        assert await asyncio.wait_for(resp.content.read(), 5) == b""
        resp.close()


async def test_errors_under_v1_are_json(pod: FakePod, tmp_path: Path) -> None:
    """Unknown /v1 routes and wrong methods answer {"error": …}, like every refusal."""
    async with running_faces(pod, tmp_path) as faces:
        assert await call(faces, "GET", "/v1/nope") == (404, {"error": "not found"})
        status, doc = await call(faces, "GET", "/v1/services/theia/stop")
        assert (status, doc) == (405, {"error": "method not allowed"})
        status, doc = await call(faces, "DELETE", "/v1/status")
        assert status == 405



async def test_stop_does_not_wait_on_a_hung_verb(
        pod: FakePod, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() cancels a hung verb (its client is told so) instead of waiting for it: with a
    grace for handlers far longer than the test's limit, stop() still returns."""
    monkeypatch.setattr(healthz.server, "SHUTDOWN_TIMEOUT", 600.0)
    pod.gate = asyncio.Event()  # never set: the engine never finishes this stop
    path = tmp_path / "podctl.sock"
    server = HealthServer(pod, PodMetrics(pod), tcp_addr=None, unix_path=path)
    await server.start()
    async with unix_session(path) as unix:
        hung = asyncio.create_task(unix.post("http://pod/v1/services/theia/stop?wait=0"))
        waiting = asyncio.create_task(unix.post("http://pod/v1/services/codi2/stop"))
        async with asyncio.timeout(5):
            while len(pod.calls) < 2:
                await asyncio.sleep(0.01)
        (await hung).release()
        await asyncio.wait_for(server.stop(), timeout=10)
        async with await asyncio.wait_for(waiting, timeout=5) as resp:
            assert resp.status == 503
            assert await resp.json() == {"error": "the pod is shutting down; outcome unknown"}
    assert not path.exists()
    assert not [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("podctl ")]
