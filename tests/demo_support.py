"""The demo pod (scripts/demo) as a test fixture: the production catalogue with the demo
overlay, the real engine, the stand-ins, the real nginx on 127.0.0.1:8000, our file monitor,
and `podctl` run as a real command against it.

The demo's ports are fixed by its catalogue and nginx's configuration, so the pod can run only
where they are free; `busy_demo_ports` says which are not (the tests skip, naming them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from healthz.podctl_client import PodClient
from tests.support import ROOT, RunningPod, http_get, pid_alive, wait_for

# Every port the demo binds, and who binds it. The health service is on 8081 (the demo's
# default) because nginx's `/health` proxies to 127.0.0.1:8081 (deploy/nginx/coditect-http.conf).
DEMO_PORTS = {
    3000: "theia stand-in",
    8080: "coditect-v5-api stand-in",
    8765: "codi2 stand-in",
    8000: "nginx",
    9101: "file-monitor metrics",
    8081: "health service (nginx's /health upstream)",
}
HEALTH_PORT = 8081
NGINX = "http://127.0.0.1:8000"
SERVICES = ("theia", "coditect-v5-api", "codi2", "nginx", "file-monitor")
# The services the demo always has working: the file monitor is non-critical and may be absent.
CORE = ("theia", "coditect-v5-api", "codi2", "nginx")
BOOT_DEADLINE = 30.0
COMMAND_DEADLINE = 30.0


def busy_demo_ports() -> list[str]:
    """The demo's ports something already listens on (SO_REUSEADDR, as the services bind, so
    a connection in TIME_WAIT does not count as busy)."""
    busy = []
    for port, owner in DEMO_PORTS.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"{port} ({owner})")
    return busy


def world_traversable_tmp(prefix: str) -> Path:
    """A fresh directory any user can enter (pytest's tmp_path is under a 0700 directory), so
    only the control socket's own mode decides whether another user gets in."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def running_demo(prefix: str, catalogue: Path = ROOT / "supervisor",
                 env: dict[str, str] | None = None, wrapper: Sequence[str] = (),
                 boot_deadline: float = BOOT_DEADLINE, make_run_dir: bool = True
                 ) -> Iterator[Demo]:
    """A demo pod answering /readyz 200 (the test skips where its fixed ports are taken or
    nginx is missing); stopped and its directory removed afterwards."""
    busy = busy_demo_ports()
    if busy:
        pytest.skip(f"the demo pod's fixed ports are in use: {', '.join(busy)}")
    if shutil.which("nginx") is None:
        pytest.skip("the demo pod needs nginx on PATH")
    base = world_traversable_tmp(prefix)
    pod = Demo(base, catalogue, env, wrapper, make_run_dir=make_run_dir)
    try:
        wait_for(pod.answers, boot_deadline, lambda: f"/readyz 200\n{pod.pod.tail()}",
                 interval=0.1)
        yield pod
    finally:
        pod.stop()
        shutil.rmtree(base, ignore_errors=True)


class Demo:
    """One running demo pod, its directories, and ways to ask it things."""

    def __init__(self, base: Path, catalogue: Path = ROOT / "supervisor",
                 env: dict[str, str] | None = None, wrapper: Sequence[str] = (),
                 make_run_dir: bool = True) -> None:
        self.base = base
        self.catalogue = catalogue
        self.home = base / "home"
        self.workspace = base / "workspace"
        self.workspace.mkdir()
        # Created here, 0755, before the engine runs: the engine keeps an existing directory
        # as it is, so the socket's 0600 is the only thing refusing a second user.
        # `make_run_dir=False`: the engine creates it, 0700.
        if make_run_dir:
            (base / "home-run").mkdir(mode=0o755)
        self.env = {
            "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "CODITECT_TEMPLATE": str(ROOT / "demo" / "template"),
            "CODITECT_WORKSPACE": str(self.workspace),
            "JWT_SECRET": "demo-only-not-a-secret",
            "FDB_CLUSTER_FILE": str(ROOT / "demo" / "fdb.cluster"),
            # nginx's own directory, under the world-traversable base: its workers run as
            # another user when we are root, and the run directory is 0700.
            "CODITECT_NGINX_DIR": str(base / "nginx"),
            **(env or {}),
        }
        self.pod = RunningPod(
            catalogue, self.home, env=self.env, health_port=HEALTH_PORT, wrapper=wrapper,
            extra_args=["--overlay", str(ROOT / "demo" / "overlay.conf")])
        self.run_dir = self.pod.run_dir
        self.socket = self.run_dir / "podctl.sock"
        self.client = PodClient(str(self.socket), 10)

    # --- asking -----------------------------------------------------------------------------

    def podctl(self, *argv: str, timeout: float = COMMAND_DEADLINE,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The installed `podctl` command (or `python -m healthz.podctl`) against this pod."""
        return run_podctl("--socket", str(self.socket), "--home", str(self.home), *argv,
                          timeout=timeout, env=env)

    def status(self) -> dict[str, dict[str, Any]]:
        answer = self.client.call("GET", "/v1/status")
        return {s["name"]: s for s in answer["services"]}

    def running(self, *names: str) -> bool:
        status = self.status()
        return all(status[n]["state"] == "running" and status[n]["ready"] for n in names)

    def wait_running(self, *names: str, timeout: float = 20.0) -> None:
        wait_for(lambda: self.running(*names), timeout,
                 lambda: f"{', '.join(names)} running and ready: {self.status()}",
                 interval=0.1)

    def pid(self, name: str) -> int:
        pid = self.status()[name]["pid"]
        assert isinstance(pid, int), f"{name} has no pid"
        return pid

    def answers(self) -> bool:
        """/readyz is 200; fails the test at once if the pod exited."""
        if self.pod.process.poll() is not None:
            raise AssertionError(f"the demo pod exited ({self.pod.process.returncode})\n"
                                 f"{self.pod.tail(40)}")
        try:
            return self.health_get("/readyz")[0] == 200
        except OSError:
            return False

    def health_get(self, path: str) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{HEALTH_PORT}{path}")

    def spawned_pids(self) -> set[int]:
        return {int(e["pid"]) for e in self.pod.events("spawned")}

    def stop(self) -> None:
        self.pod.stop()


def podctl_command() -> list[str]:
    script = ROOT / ".venv" / "bin" / "podctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "healthz.podctl"]


def run_podctl(*argv: str, timeout: float = COMMAND_DEADLINE,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **(env or {})}
    return subprocess.run([*podctl_command(), *argv], capture_output=True, text=True,
                          env=environment, cwd=ROOT, timeout=timeout, check=False)


def curl_f(url: str) -> int:
    """`curl -f` as the image's HEALTHCHECK runs it: its exit code (22: HTTP error)."""
    done = subprocess.run(["curl", "-f", "-s", "-o", os.devnull, "--max-time", "5", url],
                          capture_output=True, timeout=15, check=False)
    return done.returncode


def health_document(url: str) -> tuple[int, dict[str, Any]]:
    status, body = http_get(url)
    return status, json.loads(body)


def children(pid: int) -> set[int]:
    """The direct children of `pid` (nginx's workers, for its master)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def all_gone(pids: set[int]) -> bool:
    return not any(pid_alive(p) for p in pids)


def nobody_client_dir(base: Path) -> Path:
    """podctl's own modules (standard library only) copied where user `nobody` can read them:
    the venv's interpreter lives under /root (0700), out of nobody's reach."""
    target = base / "nobody-client"
    package = target / "healthz"
    package.mkdir(parents=True)
    target.chmod(0o755)
    package.chmod(0o755)
    (package / "__init__.py").write_text("")
    for source in [*(ROOT / "healthz").glob("podctl*.py"), ROOT / "healthz" / "names.py"]:
        shutil.copyfile(source, package / source.name)
    for path in package.iterdir():
        path.chmod(0o644)
    return target


def system_python() -> str | None:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None
