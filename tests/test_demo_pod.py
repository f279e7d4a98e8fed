"""End to end against the real demo pod: the real engine running the production catalogue with
the demo overlay (stand-ins, the real nginx on 127.0.0.1:8000, our file monitor), `podctl` as a
real command, `curl` through nginx, a second user at the control socket, and the drain.

One pod serves the module (each test leaves it as it found it, in any order); the drain test
takes a pod of its own (the demo's ports are fixed: the shared one is stopped first, and booted
again by the next test that needs it). `logs -f` across a rotation uses a small pod of its own.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.demo_support import (
    CORE,
    HEALTH_PORT,
    NGINX,
    SERVICES,
    Demo,
    all_gone,
    children,
    curl_f,
    health_document,
    nobody_client_dir,
    podctl_command,
    run_podctl,
    running_demo,
    system_python,
)
from tests.support import ROOT, RunningPod, unmeasured, wait_for, write_catalogue


class SharedDemo:
    """The module's demo pod, booted when a test first asks for it (again, if it was stopped)."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._demo: Demo | None = None

    def get(self) -> Demo:
        if self._demo is None or self._demo.pod.process.poll() is not None:
            self.close()
            self._demo = self._stack.enter_context(running_demo("coditect-demo-"))
        return self._demo

    def close(self) -> None:
        self._demo = None
        self._stack.close()


@pytest.fixture(scope="module")
def shared_demo() -> Iterator[SharedDemo]:
    shared = SharedDemo()
    yield shared
    shared.close()


@pytest.fixture
def demo(shared_demo: SharedDemo) -> Demo:
    """The shared pod, its four core services running and ready (theia: after startsecs=5)."""
    pod = shared_demo.get()
    pod.wait_running(*CORE)
    return pod


@pytest.fixture
def own_demo(shared_demo: SharedDemo) -> Iterator[Demo]:
    """A demo pod for one test that ends it."""
    shared_demo.close()  # the ports are fixed: one demo pod at a time
    with running_demo("coditect-demo-own-") as pod:
        yield pod


def cells(table: str, name: str) -> list[str]:
    """The cells of `name`'s row in podctl's table (columns are two or more spaces apart)."""
    for line in table.splitlines()[1:]:
        row = re.split(r"\s{2,}", line.strip())
        if row[0] == name:
            return row
    raise AssertionError(f"no row for {name} in\n{table}")


# --- podctl, every verb, as a real command ---------------------------------------------------


def test_status_table(demo: Demo) -> None:
    """Five services; the four the demo always has are running and ready (theia, with a
    readiness probe, is running as soon as the probe passes, whatever its startsecs=5)."""
    demo.wait_running(*CORE)
    done = demo.podctl("status")
    assert done.returncode in (0, 3), done.stderr  # 3 only if the file monitor is down
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATE", "READY"]
    # The pod's seeding of $CODITECT_HOME is listed first, as a task: hence the KIND column.
    assert "LAST EXIT" in lines[0] and lines[0].split()[-3:] == ["CPU", "MEM", "KIND"]
    assert [line.split()[0] for line in lines[1:]] == ["coditect-home", *SERVICES]
    for name in CORE:
        row = cells(done.stdout, name)
        assert row[1:3] == ["running", "yes"], row
        assert row[3].isdigit()
    assert "\x1b[" not in done.stdout  # not a TTY: no colour
    named = demo.podctl("status", *CORE)
    assert named.returncode == 0, named.stdout + named.stderr


def test_status_json(demo: Demo) -> None:
    done = demo.podctl("status", "--json", *CORE)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert {"services", "ready", "draining", "started_up", "booted_at",
                        "reload_errors"} <= set(answer)
    assert answer["draining"] is False and answer["started_up"] is True
    assert [s["name"] for s in answer["services"]] == list(CORE)
    for service in answer["services"]:
        assert {"name", "state", "critical", "ready", "live", "pid", "uptime_seconds",
                "restarts", "restarts_by_reason", "last_exit", "last_exit_code", "reason",
                "cpu_percent", "rss_bytes"} <= set(service)
        assert service["state"] == "running" and service["ready"] is True
        assert isinstance(service["pid"], int)
        assert isinstance(service["cpu_percent"], float) and service["cpu_percent"] >= 0
        assert isinstance(service["rss_bytes"], int) and service["rss_bytes"] > 1024 * 1024
        assert service["uptime_seconds"] > 0
    critical = {s["name"]: s["critical"] for s in answer["services"]}
    assert critical == {"theia": True, "coditect-v5-api": False, "codi2": False, "nginx": True}


def test_health_and_is_ready(demo: Demo) -> None:
    health = demo.podctl("health")
    assert health.returncode == 0, health.stdout + health.stderr
    for name in CORE:
        assert re.search(rf"^\[\+\] {re.escape(name)}\s+running\s+ready, live", health.stdout,
                         re.M), health.stdout
    assert "codi2" in health.stdout and "non-critical" in health.stdout
    assert health.stdout.splitlines()[-1] == "pod: ready, live, started up"

    ready = demo.podctl("is-ready")
    assert ready.returncode == 0, ready.stderr
    assert ready.stdout.rstrip().endswith("readyz check passed")
    assert "[+]theia ok" in ready.stdout
    quiet = demo.podctl("is-ready", "-q")
    assert (quiet.returncode, quiet.stdout) == (0, "")


def test_restart_gives_a_new_pid(demo: Demo) -> None:
    old = demo.pid("codi2")
    done = demo.podctl("restart", "codi2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("codi2: ")
    new = demo.pid("codi2")
    assert new != old
    assert f"pid {new}" in done.stdout
    wait_for(lambda: all_gone({old}), 5, "the old codi2 gone")
    demo.wait_running("codi2")


def test_stop_status_start(demo: Demo) -> None:
    stopped = demo.podctl("stop", "coditect-v5-api")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    status = demo.podctl("status", "coditect-v5-api")
    assert status.returncode == 3, status.stdout + status.stderr
    row = cells(status.stdout, "coditect-v5-api")
    assert row[1:4] == ["stopped", "no", "-"], row
    # A non-critical service down: the pod is still ready.
    assert demo.podctl("is-ready", "-q").returncode == 0
    started = demo.podctl("start", "coditect-v5-api")
    assert started.returncode == 0, started.stderr
    assert "ready" in started.stdout
    demo.wait_running("coditect-v5-api")
    assert demo.podctl("status", "coditect-v5-api").returncode == 0


def test_signal_hup_reloads_nginx(demo: Demo) -> None:
    """HUP to nginx's process group: the master stays, re-reads its configuration and
    replaces its workers; nginx stays ready throughout."""
    master = demo.pid("nginx")
    workers = wait_for(lambda: children(master), 5, "nginx's workers")
    done = demo.podctl("signal", "HUP", "nginx")
    assert done.returncode == 0, done.stderr
    assert "SIGHUP" in done.stdout
    fresh = wait_for(lambda: (now := children(master)) and not now & workers and now, 10,
                     "new nginx workers")
    assert fresh.isdisjoint(workers)
    wait_for(lambda: all_gone(workers), 10, "the old workers gone")
    assert demo.pid("nginx") == master
    assert demo.status()["nginx"]["ready"] is True
    assert curl_f(f"{NGINX}/nginx-health") == 0
    assert demo.health_get("/readyz/nginx")[0] == 200


def test_unknown_service_is_4(demo: Demo) -> None:
    for argv in (["status", "nope"], ["restart", "nope"], ["health", "nope"]):
        done = demo.podctl(*argv)
        assert done.returncode == 4, (argv, done.stderr)
        assert done.stderr.startswith("podctl: no service named 'nope' (known: codi2, ")
        assert "Traceback" not in done.stderr
    bad = demo.podctl("stop", "../theia")
    assert bad.returncode == 2 and "bad service name" in bad.stderr


def test_logs_tail(demo: Demo) -> None:
    done = demo.podctl("logs", "theia", "-n", "5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert 1 <= len(lines) <= 5
    assert lines[-1] == "theia-standin: listening on 127.0.0.1:3000"
    one = demo.podctl("logs", "theia", "-n", "1")
    assert one.stdout.splitlines() == lines[-1:]


def test_reload_changes_nothing(demo: Demo) -> None:
    before = {name: demo.pid(name) for name in CORE}
    count = len(demo.pod.events("reloaded"))
    done = demo.podctl("reload")
    assert done.returncode == 0, done.stderr
    assert "no change" in done.stdout or "nothing changed" in done.stdout, done.stdout
    reloaded = demo.pod.wait_event("reloaded", count=count + 1)[count]
    assert (reloaded["added"], reloaded["removed"], reloaded["changed"]) == ([], [], [])
    assert {name: demo.pid(name) for name in CORE} == before


def test_doctor_sees_the_demo_pod(demo: Demo) -> None:
    """doctor with the demo's environment: the pod, the demo's catalogue (the pod's own check,
    with its overlay), our file monitor, CODITECT_HOME and the health port all check out."""
    env = {**demo.env, "CODITECT_CATALOGUE": str(ROOT / "supervisor"),
           "CODITECT_CATALOGUE_OVERLAY": str(ROOT / "demo" / "overlay.conf"),
           "CODITECT_HEALTH_ADDR": f"127.0.0.1:{HEALTH_PORT}"}
    done = demo.podctl("doctor", env=env)
    report = done.stdout
    assert re.search(rf"\[ok\]\s+{re.escape(str(demo.socket))}\s+5 services", report), report
    assert re.search(r"\[ok\]\s+the pod's catalogue\s+valid, as the pod reads it", report), report
    assert re.search(r"\[ok\]\s+coditect-file-monitor\s", report), report
    assert re.search(rf"\[ok\]\s+{re.escape(str(demo.home))}\s+exists and is writable", report)
    assert re.search(rf"\[ok\]\s+127.0.0.1:{HEALTH_PORT}\s+/livez answers 200", report), report
    # Missing recommended tools only warn; anything required missing would be listed FAIL.
    assert done.returncode == (1 if "[FAIL]" in report else 0), report


def test_validate(tmp_path: Path) -> None:
    """The production catalogue is invalid here (the private binaries are not installed);
    a small valid one passes. No pod needed."""
    done = run_podctl("validate", str(ROOT / "supervisor"))
    assert done.returncode == 78, done.stdout + done.stderr
    for binary in ("/usr/local/bin/codi2", "/usr/local/bin/coditect-v5-api",
                   "/usr/local/bin/file-monitor"):
        assert f"'{binary}' is not an executable file" in done.stderr, done.stderr
    assert "catalogue invalid" in done.stderr
    catalogue = write_catalogue(tmp_path / "cat", {"one": {"command": "sleep 1000"}})
    valid = run_podctl("validate", str(catalogue))
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "catalogue valid: 1 services (one)" in valid.stdout


# --- the control socket refuses a second user --------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")
def test_second_user_is_refused(demo: Demo) -> None:
    """User `nobody`, with the real podctl client (stdlib only, run by the system python) and
    with a bare connect: permission denied, exit 4. The run directory is 0755, so it is the
    socket's own mode (0600, owned by root) that refuses."""
    python = system_python()
    if shutil.which("setpriv") is None or python is None:
        pytest.skip("needs setpriv and a system python3")
    mode = demo.socket.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == 0
    assert stat.S_IMODE(demo.run_dir.stat().st_mode) == 0o755
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", python]
    client = nobody_client_dir(demo.base)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(client), "PYTHONDONTWRITEBYTECODE": "1",
           "NO_COLOR": "1"}
    done = subprocess.run(
        [*as_nobody, "-m", "healthz.podctl", "--socket", str(demo.socket), "status"],
        capture_output=True, text=True, env=env, cwd=client, timeout=20, check=False)
    assert done.returncode == 4, done.stdout + done.stderr
    assert done.stderr.startswith(f"podctl: pod unreachable: permission denied on {demo.socket}")
    assert "uid 0" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""

    connect = ("import errno, socket\n"
               "s = socket.socket(socket.AF_UNIX)\n"
               "try:\n"
               f"    s.connect({str(demo.socket)!r}); print('CONNECTED')\n"
               "except OSError as e:\n"
               "    print(errno.errorcode[e.errno])\n")
    raw = subprocess.run([*as_nobody, "-c", connect], capture_output=True, text=True,
                         env=env, cwd=client, timeout=20, check=False)
    assert raw.stdout.strip() == errno.errorcode[errno.EACCES], raw.stdout + raw.stderr
    # The owner still gets in, and the pod noticed nothing.
    assert demo.podctl("status", *CORE).returncode == 0


# --- nginx's /health is the pod's aggregate ----------------------------------------------


def test_nginx_health_follows_a_critical_service(demo: Demo) -> None:
    url = f"{NGINX}/health"
    assert curl_f(url) == 0
    status, document = health_document(url)
    assert status == 200 and document["status"] in ("pass", "warn")
    assert document["checks"]["theia:ready"][0]["status"] == "pass"

    stopped = demo.podctl("stop", "theia")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: curl_f(url) == 22, 10, "curl -f /health failing")
    assert demo.health_get("/readyz")[0] == 503
    status, document = health_document(url)
    assert status == 503 and document["status"] == "fail"
    assert demo.podctl("is-ready", "-q").returncode == 1

    started = demo.podctl("start", "theia")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: curl_f(url) == 0, 15, "curl -f /health passing again")
    wait_for(lambda: demo.health_get("/readyz")[0] == 200, 15, "/readyz 200 again")
    demo.wait_running("theia")


def test_non_critical_down_is_warn(demo: Demo) -> None:
    url = f"{NGINX}/health"
    assert demo.podctl("stop", "codi2").returncode == 0
    try:
        status, document = health_document(url)
        assert status == 200 and document["status"] == "warn"
        assert document["checks"]["codi2:ready"][0]["status"] == "warn"
        assert "output" not in document  # through nginx it is the TCP face: no reasons
        assert curl_f(url) == 0
        assert demo.health_get("/readyz")[0] == 200
    finally:
        assert demo.podctl("start", "codi2").returncode == 0
    demo.wait_running("codi2")


# --- a killed stand-in comes back --------------------------------------------------------


def test_sigkilled_standin_is_respawned(demo: Demo) -> None:
    old = demo.pid("theia")
    restarts = demo.status()["theia"]["restarts"]
    spawned = len(demo.pod.events("spawned", service="theia"))
    os.kill(old, signal.SIGKILL)
    respawn = demo.pod.wait_event("spawned", service="theia", count=spawned + 1, timeout=15)
    assert respawn[-1]["pid"] != old
    wait_for(lambda: demo.status()["theia"]["ready"], 15, "theia ready again", interval=0.1)
    wait_for(lambda: demo.health_get("/readyz")[0] == 200, 15, "/readyz 200 again")
    done = demo.podctl("status", "theia")
    row = cells(done.stdout, "theia")
    assert row[1] in ("starting", "running") and row[2] == "yes", row
    assert row[3] == str(respawn[-1]["pid"])
    assert row[5] == str(restarts + 1), row  # podctl's own stop/start are not restarts
    assert row[6] == "signal 9 (SIGKILL)", row
    assert demo.status()["theia"]["last_exit_code"] == -9
    demo.wait_running("theia")


# --- the drain (a pod of its own: it ends it) ---------------------------------------------


def test_drain_stops_nginx_first_and_leaves_nothing(own_demo: Demo) -> None:
    """SIGTERM: /readyz 503 at once, nginx stopped (SIGQUIT) and gone before the services
    behind it are signalled, exit 0, no process and no socket left."""
    demo = own_demo
    pids = demo.spawned_pids()
    workers = children(demo.pid("nginx"))
    assert workers
    demo.pod.signal(signal.SIGTERM)
    wait_for(lambda: demo.health_get("/readyz")[0] == 503 or demo.pod.process.poll() is not None,
             5, "/readyz 503 once draining")
    assert demo.pod.wait(30) == 0, demo.pod.tail(40)
    events = demo.pod.events()
    names = [e.get("event") for e in events]
    drain = names.index("draining")
    after = events[drain:]
    nginx_gone = next(i for i, e in enumerate(after)
                      if e.get("event") == "exited" and e.get("service") == "nginx")
    for name in ("theia", "coditect-v5-api", "codi2"):
        signalled = next(i for i, e in enumerate(after)
                         if e.get("event") == "stopping" and e.get("service") == name)
        assert nginx_gone < signalled, (name, after)
    nginx_stop = next(e for e in after if e.get("event") == "stopping"
                      and e.get("service") == "nginx")
    assert nginx_stop["signal"] == "SIGQUIT"  # nginx's stopsignal: finish requests first
    assert demo.pod.events("drained")[-1]["in_time"] is True
    assert demo.pod.events("exit")[-1]["code"] == 0
    wait_for(lambda: all_gone(pids | workers), 5,
             lambda: f"no leftover processes: {sorted(p for p in pids | workers)}")
    assert not demo.socket.exists()
    assert curl_f(f"{NGINX}/nginx-health") != 0


# --- `podctl logs -f` across real rotations (a small pod of its own) ----------------------

PAD = "x" * 90
CHATTY = f"sh -c 'i=0; while :; do i=$((i+1)); echo \"line $i {PAD}\"; sleep 0.02; done'"


def test_logs_follow_across_rotation(tmp_path: Path) -> None:
    """`podctl logs chatty -f` while the engine rotates chatty.log every 2 KB: every line,
    in order, none twice, through several rotations; SIGTERM ends it with 0."""
    catalogue = write_catalogue(tmp_path / "cat", {"chatty": {
        "command": CHATTY, "startsecs": "0", "stdout_logfile_maxbytes": "2KB",
        "stdout_logfile_backups": "5"}})
    home = tmp_path / "home"
    pod = RunningPod(catalogue, home)
    log = home / "logs" / "chatty.log"
    follower: subprocess.Popen[bytes] | None = None
    try:
        wait_for(log.exists, 10, "chatty's log")
        wait_for(lambda: log.stat().st_size > 0, 10, "chatty's first line")
        first_inode = log.stat().st_ino
        follower = subprocess.Popen(
            [*podctl_command(), "--home", str(home), "logs", "chatty", "-f", "-n", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            # Unmeasured: like `tail -F`, a follower that polls slower than chatty rotates
            # (about every half second) skips a whole file; coverage slows it down that much.
            env={**unmeasured(), "PYTHONPATH": str(ROOT)}, cwd=ROOT)
        out = bytearray()
        reader = threading.Thread(target=_collect, args=(follower, out), daemon=True)
        reader.start()

        def numbers() -> list[int]:
            complete = bytes(out).rpartition(b"\n")[0]
            return [int(line.split()[1]) for line in complete.splitlines()]

        wait_for(numbers, 10, "the follower's first lines")
        start = numbers()[0]
        # 2 KB holds about 20 of these lines: 90 more lines are several rotations.
        wait_for(lambda: numbers()[-1] >= start + 90, 20,
                 lambda: f"lines past {start + 90} (got up to {numbers()[-1]})")
        assert log.stat().st_ino != first_inode
        assert (home / "logs" / "chatty.log.3").exists()  # it really rotated, several times
        seen = numbers()
        assert seen == list(range(start, start + len(seen))), "a line lost or repeated"
        assert all(line.endswith(PAD.encode()) for line in bytes(out).splitlines()[:-1])
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(10) == 0
        assert follower.stderr is not None and follower.stderr.read() == b""
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait(5)
        if follower is not None and follower.stderr is not None:
            follower.stderr.close()
        pod.stop()


def _collect(process: subprocess.Popen[bytes], out: bytearray) -> None:
    assert process.stdout is not None
    while chunk := os.read(process.stdout.fileno(), 4096):
        out.extend(chunk)
    process.stdout.close()
