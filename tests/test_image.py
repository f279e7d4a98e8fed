"""The pod image in a real container engine, run the way the StatefulSet runs it: read-only
root, the manifests' mounts as volumes, uid 1001, every capability dropped, no-new-privileges.
`make image` builds it (podman, a local Debian base, the stand-ins of deploy/standins/); these
tests check what the kubelet, the engine and a person see. Skipped, in one line, only where no
container engine could be installed."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import container, container_port, production_catalogue
from tests.support import ROOT, wait_for

if shutil.which("podman") is None:
    pytest.skip("no container engine: podman is not installed and `make image` could not "
                "install it", allow_module_level=True)

PODMAN = str(ROOT / "scripts" / "podman")
IMAGE = os.environ.get("CODITECT_IMAGE", "localhost/coditect-pod:dev")
UID = 1001  # the image's USER and the StatefulSet's runAsUser (tests/test_deploy_*.py)
DRAIN_TIMEOUT = 25  # the StatefulSet's CODITECT_DRAIN_TIMEOUT
GRACE = 30  # its terminationGracePeriodSeconds: podman's --stop-timeout
READY_WITHIN = 60.0  # stand-ins start in about a second; a loaded CI runner is slower

# The StatefulSet's pod and container settings, as podman flags (deploy/README.md lists each
# flag's counterpart). No network but the container's own: the tests reach it as the kubelet
# reaches a pod, through its network namespace, and no port of the machine is taken.
STATEFULSET_FLAGS = [
    "--user", f"{UID}:{UID}",
    "--read-only",
    "--cap-drop", "all",
    "--security-opt", "no-new-privileges",
    "--network", "none",
    "--stop-timeout", str(GRACE),
    # U: owned by the container's user (podman 4.3 refuses uid= on a tmpfs).
    "--tmpfs", "/run/coditect:rw,U,mode=0700,size=64m",
    "--tmpfs", "/tmp:rw,mode=1777,size=2g",
    "--tmpfs", "/home/coder:rw,U,mode=0700,size=2g",
    "-v", f"{ROOT / 'demo' / 'fdb.cluster'}:/etc/foundationdb/fdb.cluster:ro",
    "-e", f"CODITECT_DRAIN_TIMEOUT={DRAIN_TIMEOUT}",
    "-e", "JWT_SECRET=image-test-only-not-a-secret",
    "-e", "FDB_CLUSTER_FILE=/etc/foundationdb/fdb.cluster",
]


def podman(*args: str, timeout: float = 60,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}\n"
                             f"{result.stdout}{result.stderr}")
    return result


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A figure on the terminal, whatever pytest captures."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"image: {line}")


@dataclass
class Pod:
    """A running container of the image: its name and the pid of its PID 1 on this host."""

    name: str
    host_pid: int

    def exec(self, *argv: str, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv, check=check, timeout=timeout)

    def http(self, port: int, path: str) -> tuple[int, str]:
        """GET 127.0.0.1:port/path inside the pod's network namespace, as the kubelet would
        (from outside the container, with this machine's curl); (0, error) when nothing
        answers."""
        result = subprocess.run(
            ["nsenter", f"--net=/proc/{self.host_pid}/ns/net", "curl", "-sS", "--max-time", "3",
             "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, timeout=10, check=False)
        if result.returncode != 0:
            return 0, result.stderr.strip()
        body, _, code = result.stdout.rpartition("\n")
        return int(code), body

    def status(self) -> dict[str, dict[str, Any]]:
        """`podctl status --json` inside the pod, by service name."""
        answer = json.loads(self.exec("podctl", "status", "--json", check=False).stdout)
        services = answer["services"] if isinstance(answer, dict) else answer
        return {s["name"]: s for s in services}

    def logs(self) -> list[str]:
        result = podman("logs", self.name)
        return (result.stdout + result.stderr).splitlines()


@pytest.fixture(scope="module")
def image() -> str:
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is not built: run `make image` (the set-up; needs the network "
                    "once)")
    return IMAGE


@contextlib.contextmanager
def running_pod(image: str, request: pytest.FixtureRequest) -> Iterator[Pod]:
    """The image started with the StatefulSet's flags and two fresh volumes, until ready;
    removed with its volumes afterwards, whatever happened."""
    name = f"coditect-image-test-{os.getpid()}-{secrets.token_hex(3)}"
    volumes = [f"{name}-coditect:/app/.coditect", f"{name}-workspace:/app/workspace"]
    started = time.monotonic()
    try:
        podman("run", "-d", "--name", name, *STATEFULSET_FLAGS,
               *(f for v in volumes for f in ("-v", v)), image)
        host_pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
        pod = Pod(name, host_pid)
        wait_for(lambda: pod.http(container_port("health"), "/readyz")[0] == 200,
                 timeout=READY_WITHIN, interval=0.05,
                 what=lambda: "/readyz 200; logs:\n" + "\n".join(pod.logs()[-30:]))
        report(request, f"container start → ready: {time.monotonic() - started:.2f} s")
        yield pod
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
        podman("volume", "rm", "--force", *(v.split(":")[0] for v in volumes), check=False)


@pytest.fixture(scope="module")
def pod(image: str, request: pytest.FixtureRequest) -> Iterator[Pod]:
    with running_pod(image, request) as running:
        yield running


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Every line parsed as one JSON object; fails naming the first line that is not."""
    parsed = []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(event, dict), line
        parsed.append(event)
    return parsed


def test_pid_1_is_coditect_start_as_the_image_user(pod: Pod) -> None:
    """PID 1 in the container is coditect-start itself (no shell, no init in between), running
    as uid 1001 without any capability."""
    argv = pod.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert any(Path(arg).name == "coditect-start" for arg in argv[:2]), argv
    status = dict(line.split(":", 1) for line in
                  pod.exec("cat", "/proc/1/status").stdout.splitlines() if ":" in line)
    assert status["Uid"].split()[:2] == [str(UID), str(UID)]
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0


def test_readyz_verbose_every_check_ok(pod: Pod) -> None:
    """`/readyz?verbose` on the health port answers 200 and, once the non-critical services'
    start windows have passed too, every catalogue service `[+] ok`: nginx among them on its
    unprivileged port, where the engine keeps privileged ports closed."""
    names = {spec.name for spec in production_catalogue().services}

    def all_ok() -> bool:
        code, body = pod.http(container_port("health"), "/readyz?verbose")
        checks = [line for line in body.splitlines() if line.startswith("[")]
        return (code == 200 and {line[3:].split()[0] for line in checks} >= names
                and all(line.startswith("[+]") and line.endswith(" ok") for line in checks))

    wait_for(all_ok, timeout=30, interval=0.2,
             what=lambda: "every check ok:\n" + pod.http(container_port("health"),
                                                        "/readyz?verbose")[1])
    # podman leaves the port sysctl at 1024 (Docker lowers it to 0): port 80 would be closed
    # to nginx here, its own port is not.
    start = pod.exec("cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").stdout.strip()
    assert container_port("http") >= int(start) > 80


@pytest.mark.parametrize("kind", ["startupProbe", "livenessProbe", "readinessProbe"])
def test_kubelet_probes_answer_as_the_manifest_expects(pod: Pod, kind: str) -> None:
    """Each of the StatefulSet's three probes, its path on its port, answers 2xx from the
    running container (the kubelet's success range)."""
    get = container()[kind]["httpGet"]
    port = get["port"] if isinstance(get["port"], int) else container_port(get["port"])
    code, body = pod.http(port, get["path"])
    assert 200 <= code < 400, (kind, code, body)


def test_healthcheck_passes_and_fails_with_nginx(pod: Pod) -> None:
    """The image keeps its HEALTHCHECK (built in Docker's format), `podman healthcheck run`
    passes, fails while nginx is stopped, and passes again once nginx is back."""
    config = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    assert (config.get("Healthcheck") or config["Config"].get("Healthcheck")), "no HEALTHCHECK"
    assert podman("healthcheck", "run", pod.name, check=False).returncode == 0
    pod.exec("podctl", "stop", "nginx")
    try:
        failed = podman("healthcheck", "run", pod.name, check=False)
        assert failed.returncode != 0, failed.stdout + failed.stderr
    finally:
        pod.exec("podctl", "start", "nginx")
    wait_for(lambda: podman("healthcheck", "run", pod.name, check=False).returncode == 0,
             timeout=30, interval=0.5, what="the health check to pass again")
    # The pod as it was for the next test: every service running and ready.
    wait_for(lambda: all(s["state"] == "running" and s["ready"]
                         for s in pod.status().values()), timeout=30, interval=0.2,
             what="every service running and ready again")


def test_podctl_status_through_podman_exec(pod: Pod) -> None:
    """`podman exec … podctl status` reaches the control socket and lists every service
    running and ready (exit 0)."""
    result = pod.exec("podctl", "status", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for spec in production_catalogue().services:
        assert spec.name in result.stdout
    # Non-critical services may still be in their start window (exit 0 already): wait.
    wait_for(lambda: all(s["state"] == "running" for s in pod.status().values()), timeout=30,
             interval=0.2, what=lambda: f"every service running: {pod.status()}")


def test_kill_9_of_a_service_is_respawned(pod: Pod) -> None:
    """A service killed with SIGKILL inside the container is running again under a new pid,
    its restart counted."""
    before = pod.status()["coditect-v5-api"]
    pod.exec("kill", "-9", str(before["pid"]))
    after = wait_for(
        lambda: (s if (s := pod.status()["coditect-v5-api"])["state"] == "running"
                 and s["pid"] not in (None, before["pid"]) and s.get("ready") else None),
        timeout=30, interval=0.2, what="coditect-v5-api running again under a new pid")
    assert after["restarts"] > before["restarts"]


def test_process_left_behind_by_a_service_is_cleaned_up(pod: Pod) -> None:
    """A process Theia leaves behind in a session of its own (as its terminals can) does not
    outlive Theia's restart."""
    theia = pod.status()["theia"]
    seen = len(pod.logs())
    pod.exec("kill", "-USR2", str(theia["pid"]))
    line = wait_for(lambda: next((ln for ln in pod.logs()[seen:] if "left process" in ln), None),
                    timeout=10, what="the stand-in to report the process it left behind")
    orphan = json.loads(line)
    left = int(str(orphan.get("message") or orphan.get("event") or line)
               .split("left process", 1)[1].split()[0])
    pod.exec("kill", "-9", str(theia["pid"]))
    wait_for(lambda: pod.status()["theia"]["pid"] not in (None, theia["pid"]), timeout=30,
             interval=0.2, what="theia respawned")
    wait_for(lambda: pod.exec("kill", "-0", str(left), check=False).returncode != 0,
             timeout=10, interval=0.2, what=f"process {left} to be ended")


def test_logs_are_json_lines(pod: Pod) -> None:
    """Everything `podman logs` shows is one JSON object a line, the engine's events and the
    services' output alike."""
    events = json_lines(pod.logs())
    assert {e.get("service") for e in events} >= {"theia", "nginx"}, events[:5]


def test_podman_stop_drains_inside_the_deadline(image: str,
                                                request: pytest.FixtureRequest) -> None:
    """`podman stop` (SIGTERM, SIGKILL after the grace period) ends the container with exit
    0 well inside the drain deadline, and the drain's lines are JSON like the rest."""
    with running_pod(image, request) as pod:
        started = time.monotonic()
        podman("stop", pod.name, timeout=GRACE + 30)
        took = time.monotonic() - started
        report(request, f"podman stop → exited: {took:.2f} s (drain deadline {DRAIN_TIMEOUT} s)")
        code = podman("inspect", "--format", "{{.State.ExitCode}}", pod.name).stdout.strip()
        assert code == "0", "\n".join(pod.logs()[-30:])
        assert took < DRAIN_TIMEOUT
        events = json_lines(pod.logs())
        assert any("drain" in str(e.get("event", "")) for e in events), events[-5:]


@pytest.mark.parametrize("flags", [
    # The obvious tmpfs is root's, mode 0755.
    ["--read-only", "--tmpfs", "/run/coditect"],
    # Docker's --read-only: no tmpfs on /run, the image's /run/coditect stays read-only.
    ["--read-only", "--read-only-tmpfs=false"],
], ids=["tmpfs-as-root", "read-only-like-docker"])
def test_unwritable_run_directory_is_named_with_its_remedy(image: str,
                                                           flags: list[str]) -> None:
    """The read-only command lines a person tries first stop at once with exit 1 and one line
    naming the control socket, the directory, its owner and mode, and the mount that works."""
    name = f"coditect-image-test-{os.getpid()}-{secrets.token_hex(3)}"
    # What the pod needs besides: the API's secrets, the two volumes (anonymous ones here).
    needs = ["-e", "JWT_SECRET=x", "-e", "FDB_CLUSTER_FILE=/dev/null",
             "-v", "/app/.coditect", "-v", "/app/workspace"]
    try:
        result = podman("run", "--name", name, "--network", "none", *needs, *flags, image,
                        timeout=60, check=False)
    finally:
        podman("rm", "--force", "--volumes", "--time", "0", name, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    line = next((ln for ln in result.stderr.splitlines() if "podctl.sock" in ln), "")
    assert line.startswith("coditect-start: "), result.stderr
    assert "/run/coditect/podctl.sock" in line and "mode 0755" in line, line
    assert "podman: --tmpfs /run/coditect:U,mode=0700" in line, line
    assert "Traceback" not in result.stderr


def test_read_only_with_podmans_own_tmpfs_runs(image: str,
                                               request: pytest.FixtureRequest) -> None:
    """podman's plain `--read-only` (its /run is a tmpfs the container's user may write) with
    the two volumes is enough for the pod to become ready."""
    name = f"coditect-image-test-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        podman("run", "-d", "--name", name, "--network", "none", "--read-only",
               "-e", "JWT_SECRET=x", "-e", "FDB_CLUSTER_FILE=/dev/null",
               "-v", "/app/.coditect", "-v", "/app/workspace", image)
        pod = Pod(name, int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout))
        wait_for(lambda: pod.http(container_port("health"), "/readyz")[0] == 200,
                 timeout=READY_WITHIN, interval=0.05,
                 what=lambda: "/readyz 200; logs:\n" + "\n".join(pod.logs()[-30:]))
    finally:
        podman("rm", "--force", "--volumes", "--time", "0", name, check=False)


def test_arguments_reach_coditect_start(image: str) -> None:
    """`podman run IMAGE --check` runs `coditect-start --check` (the ENTRYPOINT, not a base
    image's): without the API's secrets the check fails with exit 78 naming them."""
    result = podman("run", "--rm", "--network", "none", image, "--check", timeout=60,
                    check=False)
    assert result.returncode == 78, result.stdout + result.stderr
    assert "requires_env: JWT_SECRET is not set" in result.stderr
