"""podctl against a fake control server: real unix socket, real HTTP, real aiohttp.

The fake speaks the shapes of docs/CONTROL_API.md and stands in for the engine until the
end-to-end tests run the real one; the client, the socket and the HTTP are the real thing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from healthz.podctl import main
from healthz.podctl_client import PodClient
from healthz.podctl_errors import PodctlError

# The contract's ServiceStatus keys (docs/CONTROL_API.md); the fake serves exactly these.
SERVICE_STATUS_KEYS = {
    "name", "state", "critical", "ready", "live", "pid", "uptime_seconds", "restarts",
    "restarts_by_reason", "last_exit", "last_exit_code", "reason", "cpu_percent", "rss_bytes",
}  # fmt: skip
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
SIGNALS = {s.name.removeprefix("SIG") for s in signal.Signals}
DEADLINE = 10.0


def service(name: str, state: str = "running", **changes: Any) -> dict[str, Any]:
    running = state in ("running", "starting", "stopping")
    status: dict[str, Any] = {
        "name": name,
        "state": state,
        "critical": True,
        "ready": state == "running",
        "live": True,
        "pid": 4000 + len(name) if running else None,
        "uptime_seconds": 192.5 if running else None,
        "restarts": 0,
        "restarts_by_reason": {},
        "last_exit": None,
        "last_exit_code": None,
        "reason": "" if state == "running" else f"{name} is {state}",
        "cpu_percent": 1.5 if running else None,
        "rss_bytes": 12_900_000 if running else None,
    }
    status.update(changes)
    return status


class FakePod:
    """The engine's side of the control API, with state a test sets and calls it records."""

    def __init__(self, *services: dict[str, Any]) -> None:
        self.services = {s["name"]: s for s in services}
        self.draining = False
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.refuse: dict[str, str] = {}  # name → message of an order that fails
        self.reload_answer: dict[str, Any] = {"ok": True, "messages": ["theia: restarted"]}
        self.hang = False  # answer nothing until the server stops
        self.shutting_down = False  # verbs answer 503, as during a drain's last moments
        self.released: asyncio.Event | None = None
        self.check_answer: dict[str, Any] | None = {  # None: an engine without /v1/check
            "valid": True, "ran": True, "problems": [], "warnings": ["theia: no live probe"],
            "notes": ["[program:x] stdout_logfile: no effect here"],
            "summary": "catalogue valid: 3 services (nginx, theia, codi2)",
            "catalogue": "/cat", "overlay": "/over.conf"}

    def ready(self) -> bool:
        critical = [s for s in self.services.values() if s["critical"]]
        return not self.draining and all(s["ready"] for s in critical)

    def app(self, control: bool) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/livez", self.livez)
        app.router.add_get("/readyz", self.readyz)
        if control:
            app.router.add_get("/v1/status", self.status)
            app.router.add_get("/v1/health", self.health)
            app.router.add_post("/v1/services/{name}/{verb}", self.order)
            app.router.add_post("/v1/reload", self.reload)
            if self.check_answer is not None:
                app.router.add_get("/v1/check", self.check)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append((request.method, request.path, dict(request.query)))
        if self.hang and self.released is not None:
            await self.released.wait()
        response: web.StreamResponse = await handler(request)
        return response

    async def livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        ok = self.ready()
        lines = [
            f"[{'+' if s['ready'] else '-'}]{s['name']} "
            + ("ok" if s["ready"] else f"failed: {s['reason']}")
            for s in self.services.values()
        ]
        verdict = "readyz check passed" if ok else "readyz check failed"
        # A failure always explains itself; success only with ?verbose.
        text = "\n".join([*lines, verdict]) if "verbose" in request.query or not ok else "ok"
        return web.Response(status=200 if ok else 503, text=text + "\n")

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "services": list(self.services.values()),
                "ready": self.ready(),
                "draining": self.draining,
                "started_up": True,
                "booted_at": 1_700_000_000.0,
                "reload_errors": [],
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        keys = ("name", "critical", "ready", "live", "state", "reason")
        return web.json_response(
            {
                "ready": self.ready(),
                "live": True,
                "started_up": True,
                "services": [{k: s[k] for k in keys} for s in self.services.values()],
            }
        )

    async def order(self, request: web.Request) -> web.Response:
        name, verb = request.match_info["name"], request.match_info["verb"]
        if not NAME.fullmatch(name):
            return web.json_response({"error": "bad service name"}, status=400)
        if name not in self.services:
            return web.json_response({"error": f"no service named {name!r}"}, status=404)
        sig = request.query.get("signal", "")
        if verb == "signal" and sig.upper().removeprefix("SIG") not in SIGNALS:
            return web.json_response({"error": f"no signal named {sig!r}"}, status=400)
        if self.shutting_down:
            error = "the pod is shutting down; outcome unknown"
            return web.json_response({"error": error}, status=503)
        s = self.services[name]
        if name in self.refuse:
            return web.json_response({"ok": False, "message": self.refuse[name], "service": s})
        if request.query.get("wait") == "0":
            accepted = {"ok": True, "message": f"{verb} {name}: accepted", "service": s}
            return web.json_response(accepted, status=202)
        if verb in ("start", "restart"):
            s.update(state="running", ready=True, pid=5000 + len(self.calls), reason="")
            s["restarts"] += verb == "restart"
        elif verb == "stop":
            s.update(state="stopped", ready=False, pid=None, reason="stopped by request")
        # The engine's words: the name first, then what it did or what the service is now.
        message = f"{name}: {s['state']}" + (f", pid {s['pid']}, ready" if s["pid"] else "")
        if verb == "signal":
            message = f"{name}: sent SIG{sig} to process group {s['pid']}"
        return web.json_response({"ok": True, "message": message, "service": s})

    async def reload(self, request: web.Request) -> web.Response:
        return web.json_response(self.reload_answer)

    async def check(self, request: web.Request) -> web.Response:
        return web.json_response(self.check_answer)


class FakeServer:
    """FakePod served on a unix socket (control) and on 127.0.0.1 (health), in a thread."""

    def __init__(self, pod: FakePod, socket_path: str) -> None:
        self.pod = pod
        self.socket_path = socket_path
        self.health_port = 0
        self._up = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> FakeServer:
        self._thread.start()
        assert self._up.wait(DEADLINE), "the fake control server did not come up"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive(), "the fake control server did not stop"

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.pod.released = asyncio.Event()
        control = web.AppRunner(self.pod.app(True), handle_signals=False, shutdown_timeout=1)
        health = web.AppRunner(self.pod.app(False), handle_signals=False, shutdown_timeout=1)
        await control.setup()
        await health.setup()
        await web.UnixSite(control, self.socket_path).start()
        os.chmod(self.socket_path, 0o600)
        tcp = web.TCPSite(health, "127.0.0.1", 0)
        await tcp.start()
        self.health_port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._up.set()
        await self._stop.wait()
        self.pod.released.set()
        await control.cleanup()
        await health.cleanup()


@pytest.fixture
def run_dir() -> Iterator[str]:
    # Short, under /tmp: an AF_UNIX path must fit in 108 bytes.
    path = tempfile.mkdtemp(prefix="podctl-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pod() -> FakePod:
    return FakePod(
        service("nginx"),
        service("theia"),
        service("codi2", "backoff", critical=False, ready=False, restarts=4,
                last_exit="exit 1", last_exit_code=1, reason="ws://127.0.0.1:8765/: refused"),
    )  # fmt: skip


@pytest.fixture
def server(pod: FakePod, run_dir: str) -> Iterator[FakeServer]:
    with FakeServer(pod, os.path.join(run_dir, "podctl.sock")) as running:
        yield running


@pytest.fixture
def env(run_dir: str) -> dict[str, str]:
    """The environment podctl sees: CODITECT_RUN points at the fake's socket."""
    return {**os.environ, "CODITECT_RUN": run_dir, "NO_COLOR": "1"}


def podctl(*argv: str, env: dict[str, str]) -> int:
    return main(list(argv), env=env)


# --- status --------------------------------------------------------------------------------


def test_fake_serves_the_contract_shapes(server: FakeServer) -> None:
    """The stand-in's ServiceStatus has the contract's keys, so the real engine can replace it."""
    status = PodClient(server.socket_path, 5).call("GET", "/v1/status")
    assert set(status) == {"services", "ready", "draining", "started_up", "booted_at",
                           "reload_errors"}
    assert all(set(s) == SERVICE_STATUS_KEYS for s in status["services"])


def test_status_table_is_aligned(server: FakeServer, env: dict[str, str], capsys: Any) -> None:
    """Every row has its columns where the header has them, with human units."""
    code = podctl("status", "nginx", "theia", env=env)
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    header = out[0]
    assert header.split() == ["NAME", "STATE", "READY", "PID", "UPTIME", "RESTARTS", "LAST",
                              "EXIT", "CPU", "MEM"]  # fmt: skip
    assert out[1].split() == ["nginx", "running", "yes", "4005", "3m12s", "0", "-", "1.5%", "12.3M"]
    for column in ("STATE", "PID", "LAST EXIT", "MEM"):
        start = header.index(column)
        assert all(line[start - 1] == " " and line[start] != " " for line in out[1:])
    assert "\x1b[" not in "".join(out)


def test_bare_status_agrees_with_readyz_on_a_non_critical_service(
    server: FakeServer, env: dict[str, str], capsys: Any
) -> None:
    """A non-critical service in backoff leaves the pod ready: bare `status` exits 0 as
    /readyz answers 200, warns about it, and shows its last exit."""
    assert podctl("status", env=env) == 0
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if line.startswith("codi2"))
    assert row.split()[:6] == ["codi2", "backoff", "no", "-", "-", "4"]
    assert "exit 1" in row
    assert "codi2 is not ready (not critical" in captured.err


def test_bare_status_is_3_when_a_critical_service_is_not_ready(
    pod: FakePod, server: FakeServer, env: dict[str, str]
) -> None:
    """A critical service not ready fails /readyz, and bare `status` exits 3 with it."""
    pod.services["theia"]["ready"] = False
    assert podctl("status", env=env) == 3


def test_status_of_a_named_service_judges_only_it(server: FakeServer, env: dict[str, str]) -> None:
    """Naming running services gives 0; naming the one in backoff gives 3."""
    assert podctl("status", "nginx", env=env) == 0
    assert podctl("status", "nginx", "codi2", env=env) == 3


def test_status_json_is_the_status_object(
    server: FakeServer, env: dict[str, str], capsys: Any
) -> None:
    """`--json` prints /v1/status with only the named services, and keeps the exit code."""
    assert podctl("status", "codi2", "--json", env=env) == 3
    data = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in data["services"]] == ["codi2"]
    assert data["draining"] is False


def test_unknown_service_is_4_with_one_line(
    server: FakeServer, env: dict[str, str], capsys: Any
) -> None:
    """An unknown name exits 4 and says so in one line, listing the known names."""
    assert podctl("status", "nope", env=env) == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "podctl: no service named 'nope' (known: codi2, nginx, theia)\n"


def test_bad_name_never_reaches_the_pod(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """`../x` is a usage error, checked before any request."""
    assert podctl("restart", "../x", env=env) == 2
    assert "bad service name '../x'" in capsys.readouterr().err
    assert pod.calls == []


def test_draining_pod_is_said_on_stderr(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """A draining pod is noted beside the table, not inside it."""
    pod.draining = True
    podctl("status", "nginx", env=env)
    assert "draining" in capsys.readouterr().err


def test_options_work_after_the_verb(server: FakeServer, capsys: Any) -> None:
    """`--socket` may follow the verb, as people type it."""
    env = {**os.environ, "CODITECT_RUN": "/nonexistent"}
    assert podctl("status", "nginx", "--socket", server.socket_path, env=env) == 0
    assert podctl("--socket", server.socket_path, "status", "nginx", env=env) == 0


# --- health --------------------------------------------------------------------------------


def test_health_gives_reasons(server: FakeServer, env: dict[str, str], capsys: Any) -> None:
    """Each service gets a verdict; a failing one its reason; non-critical failure is exit 0."""
    assert podctl("health", env=env) == 0
    out = capsys.readouterr().out
    assert "[+] nginx" in out
    assert (
        "[-] codi2  backoff   not ready, live, non-critical: ws://127.0.0.1:8765/: refused" in out
    )
    assert out.endswith("pod: ready, live, started up\n")


def test_health_of_a_failing_named_service_is_3(server: FakeServer, env: dict[str, str]) -> None:
    """Naming the failing service judges it alone."""
    assert podctl("health", "codi2", env=env) == 3
    assert podctl("health", "nginx", env=env) == 0


def test_health_is_3_when_a_critical_service_is_not_ready(
    server: FakeServer, pod: FakePod, env: dict[str, str]
) -> None:
    """A critical service not ready makes the pod not ready."""
    pod.services["theia"].update(state="starting", ready=False)
    assert podctl("health", env=env) == 3


# --- orders --------------------------------------------------------------------------------


def test_restart_waits_and_says_the_outcome(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """Without --no-wait no `wait` goes out, and each outcome is printed in the order named."""
    assert podctl("restart", "theia", "nginx", env=env) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["theia", "nginx"]
    assert re.fullmatch(r"theia: running, pid \d+, ready", lines[0])
    posts = [c for c in pod.calls if c[0] == "POST"]
    assert sorted(p[1] for p in posts) == [
        "/v1/services/nginx/restart",
        "/v1/services/theia/restart",
    ]
    assert all(p[2] == {} for p in posts)


def test_no_wait_sends_wait_0(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """--no-wait becomes ?wait=0, and the pod's 202 is a success."""
    assert podctl("stop", "--no-wait", "nginx", env=env) == 0
    assert pod.calls[-1] == ("POST", "/v1/services/nginx/stop", {"wait": "0"})
    assert capsys.readouterr().out == "stop nginx: accepted\n"


def test_a_pod_shutting_down_is_1(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """A 503 from a draining pod is a failed verb, with the pod's words."""
    pod.shutting_down = True
    assert podctl("restart", "theia", env=env) == 1
    assert capsys.readouterr().err == ("podctl: theia: the pod is shutting down; outcome unknown\n")


def test_a_real_time_signal_goes_by_number(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """A signal number without a name is sent as the number; the pod's 400 is a usage error."""
    assert podctl("signal", str(signal.SIGRTMIN + 1), "nginx", env=env) == 2
    assert pod.calls[-1][2] == {"signal": str(signal.SIGRTMIN + 1)}
    assert "no signal named" in capsys.readouterr().err


def test_stop_then_status_is_3(server: FakeServer, env: dict[str, str]) -> None:
    """A stopped service is not running: status names it with 3."""
    assert podctl("stop", "nginx", env=env) == 0
    assert podctl("status", "nginx", env=env) == 3
    assert podctl("start", "nginx", env=env) == 0
    assert podctl("status", "nginx", env=env) == 0


def test_failed_order_is_1(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """An order the pod answers with ok=false exits 1 with the pod's message on stderr."""
    pod.refuse["theia"] = "not ready within 120s"
    assert podctl("start", "nginx", "theia", env=env) == 1
    captured = capsys.readouterr()
    assert re.fullmatch(r"nginx: running, pid \d+, ready\n", captured.out)
    assert captured.err == "podctl: theia: not ready within 120s\n"


def test_unknown_name_in_an_order_does_nothing(
    server: FakeServer, pod: FakePod, env: dict[str, str]
) -> None:
    """One unknown name among known ones: exit 4 and no order sent at all."""
    assert podctl("stop", "nginx", "ngnix", env=env) == 4
    assert [c for c in pod.calls if c[0] == "POST"] == []


@pytest.mark.parametrize("sig", ["HUP", "SIGHUP", "hup", "1"])
def test_signal_takes_names_and_numbers(
    server: FakeServer, pod: FakePod, env: dict[str, str], sig: str
) -> None:
    """Every spelling of SIGHUP goes out as HUP."""
    assert podctl("signal", sig, "nginx", env=env) == 0
    assert pod.calls[-1] == ("POST", "/v1/services/nginx/signal", {"signal": "HUP"})


@pytest.mark.parametrize("sig", ["FOO", "0", "999", "SIG"])
def test_bad_signal_is_a_usage_error(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any, sig: str
) -> None:
    """A bad signal is exit 2 and one line, before anything is asked of the pod."""
    assert podctl("signal", sig, "nginx", env=env) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "signal" in err
    assert pod.calls == []


# --- reload, is-ready ----------------------------------------------------------------------


def test_reload_prints_the_pods_messages(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """An applied reload is 0 with messages; a rejected one is 1 with the reasons on stderr."""
    assert podctl("reload", env=env) == 0
    assert capsys.readouterr().out == "theia: restarted\n"
    pod.reload_answer = {"ok": False, "messages": ["conf.d/x.conf [program:x] startsecss: unknown"]}
    assert podctl("reload", env=env) == 1
    err = capsys.readouterr().err
    assert "startsecss" in err and "the running catalogue stays" in err


def test_is_ready(server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any) -> None:
    """0 when /readyz is 200, 1 when 503; -q prints nothing; verbose shows the lines."""
    assert podctl("is-ready", env=env) == 0
    assert capsys.readouterr().out.endswith("readyz check passed\n")
    pod.services["nginx"].update(ready=False, reason="http://127.0.0.1:80/nginx-health: 502")
    assert podctl("--timeout", "2", "is-ready", "-q", env=env) == 1
    assert capsys.readouterr() == ("", "")
    assert podctl("is-ready", env=env) == 1
    assert "[-]nginx failed: http://127.0.0.1:80/nginx-health: 502" in capsys.readouterr().out


def test_is_ready_without_a_pod_is_1_never_2_or_4(run_dir: str, env: dict[str, str]) -> None:
    """Docker reserves exit 2; an unreachable pod is simply not ready."""
    assert podctl("is-ready", "-q", env=env) == 1


# --- unreachable ---------------------------------------------------------------------------


def test_missing_socket_is_4(run_dir: str, env: dict[str, str], capsys: Any) -> None:
    """No socket: exit 4 and one line naming the path."""
    assert podctl("status", env=env) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"podctl: pod unreachable: no socket at {run_dir}/podctl.sock")
    assert err.count("\n") == 1


def test_stale_socket_is_refused(run_dir: str, env: dict[str, str], capsys: Any) -> None:
    """A socket file with nobody listening: exit 4, 'connection refused'."""
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(os.path.join(run_dir, "podctl.sock"))
    stale.close()
    assert podctl("health", env=env) == 4
    assert "connection refused" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_another_user_gets_permission_denied(run_dir: str) -> None:
    """A mode-0600 socket refuses another user: exit 4, 'permission denied'."""
    os.chmod(run_dir, 0o755)
    path = os.path.join(run_dir, "podctl.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, try the socket, report, leave at once
        code = 99
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            PodClient(path, 2).request("GET", "/v1/status")
        except PodctlError as exc:
            os.write(write_end, exc.message.encode())
            code = exc.code
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        assert select.select([read_end], [], [], DEADLINE)[0], "the child said nothing in time"
        message = os.read(read_end, 4096).decode()
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(read_end)
        listener.close()
    assert os.waitstatus_to_exitcode(status) == 4
    assert message.startswith(f"pod unreachable: permission denied on {path}")
    assert "uid 0" in message


def test_a_pod_that_does_not_answer_times_out(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """A question unanswered is exit 4; an order unanswered is exit 1 (it may still happen)."""
    pod.hang = True
    started = time.monotonic()
    assert podctl("status", "--timeout", "0.3", env=env) == 4
    assert "no answer within 0.3s" in capsys.readouterr().err
    assert podctl("--timeout", "0.3", "restart", "nginx", env=env) in (1, 4)
    assert time.monotonic() - started < 5


def test_a_hung_order_is_1(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """The names check answers, then the order hangs: exit 1, 'may still be carried out'."""
    original = pod.order

    async def hanging(request: web.Request) -> web.Response:
        assert pod.released is not None
        await pod.released.wait()
        return await original(request)

    pod.order = hanging  # type: ignore[method-assign]
    # The route was bound at start; rebind through a fresh server on another socket.
    with FakeServer(pod, server.socket_path + "2") as slow:
        assert podctl("restart", "nginx", "--timeout", "0.3", "--socket", slow.socket_path,
                      env=env) == 1  # fmt: skip
    assert "no outcome within 0.3s" in capsys.readouterr().err


# --- usage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["status", "--bogus"], ["logs"], ["logs", "x", "-n", "many"],
     ["status", "--timeout", "soon"], ["start"]],
)  # fmt: skip
def test_usage_errors_are_2_and_one_line(argv: list[str], env: dict[str, str], capsys: Any) -> None:
    """Malformed command lines: exit 2, one line on stderr, no traceback."""
    assert podctl(*argv, env=env) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err


def test_help_lists_the_exit_codes(capsys: Any) -> None:
    """`--help` documents the exit codes."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out and "4  pod unreachable" in out


# --- validate with a pod -------------------------------------------------------------------


def test_validate_asks_the_pod_and_says_so(
    server: FakeServer, env: dict[str, str], capsys: Any
) -> None:
    """Without DIR, the pod's own check: its notes, warnings and verdict, and whose it is."""
    assert podctl("validate", env=env) == 0
    said = capsys.readouterr()
    assert said.out == (
        "note: [program:x] stdout_logfile: no effect here\n"
        "warning: theia: no live probe\n"
        "catalogue valid: 3 services (nginx, theia, codi2) (the running pod's catalogue /cat "
        "with its overlay /over.conf, in its environment)\n")
    assert said.err == ""
    assert ("GET", "/v1/check", {}) in server.pod.calls


def test_validate_of_an_invalid_pod_catalogue_is_78(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """The pod's problems, one a line on stderr, and the engine's code for them."""
    pod.check_answer = {"valid": False, "ran": True, "warnings": [], "notes": [],
                        "problems": ["/cat/x.conf:3: [program:x] startsecs: expected a whole "
                                     "number of seconds, got 'two'"],
                        "summary": "catalogue invalid (1 problem); nothing started",
                        "catalogue": "/cat", "overlay": None}
    assert podctl("validate", env=env) == 78
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("podctl: /cat/x.conf:3: [program:x] startsecs: expected a whole number "
                      "of seconds, got 'two'")
    assert err[1].startswith("podctl: catalogue invalid (1 problem): the running pod's "
                             "catalogue /cat, in its environment;")
    pod.check_answer = {**pod.check_answer, "ran": False,
                        "problems": ["the catalogue check did not finish in 60s"]}
    assert podctl("validate", env=env) == 1


def test_validate_with_an_older_engine_checks_here(
    server: FakeServer, pod: FakePod, env: dict[str, str], capsys: Any
) -> None:
    """An engine without /v1/check: the check is made here, and stderr says why."""
    pod.check_answer = None
    with FakeServer(pod, os.path.join(os.path.dirname(server.socket_path), "old.sock")) as old:
        code = podctl("validate", "--socket", old.socket_path,
                      env={**env, "CODITECT_CATALOGUE": "/nonexistent-catalogue"})
    assert code == 78
    assert capsys.readouterr().err.startswith(
        "podctl: the pod cannot check (the pod does not know GET /v1/check")


# --- doctor with a pod ---------------------------------------------------------------------


def test_doctor_sees_the_pod_and_its_health_port(
    server: FakeServer, env: dict[str, str], tmp_path: Path, capsys: Any
) -> None:
    """With a pod running, doctor reports its services and probes /livez on the health port."""
    env = {**env, "CODITECT_HEALTH_ADDR": f"0.0.0.0:{server.health_port}"}
    podctl("doctor", "--home", str(tmp_path), env=env)
    out = capsys.readouterr().out
    assert "3 services, 2 running and ready" in out
    assert "[warn] codi2" in out
    assert "[ok]   the pod's catalogue  valid, as the pod reads it (/cat + /over.conf)" in out
    assert f"[ok]   127.0.0.1:{server.health_port}  /livez answers 200 ok" in out


# --- as a real command ---------------------------------------------------------------------


def run_podctl(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "healthz.podctl", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def test_command_exit_codes_and_json(server: FakeServer, env: dict[str, str]) -> None:
    """As a process: 0, 3 and 4 as documented, and `--json` parses."""
    done = run_podctl("status", "--json", env=env)
    assert done.returncode == 0  # codi2 is down, but it is not critical: /readyz is 200
    assert {s["name"] for s in json.loads(done.stdout)["services"]} == {"nginx", "theia", "codi2"}
    assert run_podctl("status", "nginx", env=env).returncode == 0
    assert run_podctl("status", "codi2", env=env).returncode == 3
    unknown = run_podctl("start", "nope", env=env)
    assert (unknown.returncode, unknown.stderr.count("\n")) == (4, 1)
    assert run_podctl("is-ready", "-q", env=env).returncode == 0


def test_command_without_a_pod_is_4(run_dir: str, env: dict[str, str]) -> None:
    """As a process, with no socket: exit 4, one line, no traceback."""
    done = run_podctl("status", env=env)
    assert done.returncode == 4
    assert done.stderr.count("\n") == 1 and "no socket at" in done.stderr


HEAVY = ("aiohttp", "psutil", "structlog", "prometheus_client", "supervisor", "start", "yarl")


def test_podctl_imports_nothing_heavy() -> None:
    """podctl runs on the standard library alone: none of the server's imports load."""
    script = (
        "import sys\n"
        "from healthz import podctl\n"
        "podctl.main(['status', '--socket', '/nonexistent/podctl.sock'])\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE, check=True
    )
    loaded = set(done.stdout.split())
    assert "http.client" not in loaded  # too slow to import for one HTTP/1.0 exchange
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
