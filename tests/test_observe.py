"""Seeing the pod: `podctl top`, `timeline`, `events -f` and `ports` against real pods, and a
follower too slow to read being dropped rather than holding the engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import select
import signal
import socket
import subprocess
import termios
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.wait import until
from healthz.eventfeed import EventFeed
from tests.health_support import FakePod, default_pod_services, running_faces
from tests.support import PYTHON, ROOT, RunningPod, free_port, get, wait_for, write_catalogue

DEADLINE = 30.0  # seconds any one podctl may take


def podctl(pod: RunningPod, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CODITECT_RUN": str(pod.run_dir)}
    return subprocess.run([PYTHON, "-m", "healthz.podctl", *argv], capture_output=True,
                          text=True, env=env, timeout=DEADLINE, check=False)


def ask(pod: RunningPod, *argv: str) -> Any:
    done = podctl(pod, *argv)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def service_row(document: Any, name: str) -> dict[str, Any]:
    return next(row for row in document["services"] if row["name"] == name)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def server_script(tmp_path: Path, name: str, port: int) -> Path:
    script = tmp_path / f"{name}.py"
    script.write_text(
        "import socket, time\n"
        f"s = socket.create_server(('127.0.0.1', {port}))\n"
        "time.sleep(1000)\n")
    return script


def test_top_sums_threads_files_and_memory_over_the_whole_tree(tmp_path: Path) -> None:
    """Not on a terminal, `podctl top` prints one JSON snapshot: the service's row counts its
    shell and the Python below it, with the Python's threads and open files."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import threading, time\n"
        "held = [open('/dev/null') for _ in range(20)]\n"
        "for _ in range(6):\n"
        "    threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()\n"
        "open(__file__ + '.up', 'w').close()\n"
        "time.sleep(1000)\n")
    catalogue = write_catalogue(tmp_path / "cat", {
        "dev": {"command": f"sh -c '{PYTHON} {worker}; sleep 1000'", "startsecs": "0"},
        "idle": {"command": "sleep 1000", "startsecs": "0"},
    })
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("spawned", count=2)
        wait_for(lambda: Path(f"{worker}.up").exists(), 15, "the worker's threads and files")
        document = ask(pod, "top")
        dev = service_row(document, "dev")
        assert dev["processes"] == 2  # the shell and the Python
        assert dev["threads"] >= 8  # the Python's seven and the shell's one
        assert dev["open_files"] >= 20
        assert dev["rss_bytes"] > service_row(document, "idle")["rss_bytes"]
        assert isinstance(dev["read_bytes"], int) and isinstance(dev["write_bytes"], int)
        assert document["unattributed"]["processes"] == 0
    finally:
        pod.stop()


def test_top_on_a_terminal_redraws_until_q(tmp_path: Path) -> None:
    """On a terminal `podctl top` clears and redraws the table every second; `q` ends it with
    exit 0 and the terminal's mode put back."""
    catalogue = write_catalogue(tmp_path / "cat", {"idle": {"command": "sleep 1000",
                                                            "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    main, terminal = pty.openpty()
    top: subprocess.Popen[bytes] | None = None
    seen = bytearray()
    try:
        pod.wait_event("health_listening")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CODITECT_RUN": str(pod.run_dir)}
        mode = termios.tcgetattr(terminal)
        top = subprocess.Popen([PYTHON, "-m", "healthz.podctl", "top"], stdin=terminal,
                               stdout=terminal, stderr=terminal, env=env)

        def redrawn() -> bool:
            readable, _, _ = select.select([main], [], [], 0)
            if readable:
                seen.extend(os.read(main, 65536))
            return seen.count(b"\x1b[2J") >= 2 and seen.count(b"idle") >= 2

        wait_for(redrawn, 15, lambda: f"two redraws of the table: {bytes(seen)!r}")
        os.write(main, b"q")
        assert top.wait(DEADLINE) == 0
        assert b"NAME" in seen and b"THREADS" in seen
        assert termios.tcgetattr(terminal) == mode
    finally:
        if top is not None and top.poll() is None:
            top.kill()
            top.wait(10)
        os.close(main)
        os.close(terminal)
        pod.stop()


def test_timeline_marks_the_chain_that_held_the_boot_up(tmp_path: Path) -> None:
    """`slow` takes 1 s to be ready (startsecs), `app` waits for it, `quick` waits for nothing:
    the critical chain is the pod's own seeding → slow → app, app was released by slow and
    spawned after it was ready; quick is off the chain; the seeding is the first step."""
    catalogue = write_catalogue(
        tmp_path / "cat", {
            "slow": {"command": "sleep 1000", "startsecs": "1"},
            "app": {"command": "sleep 1000", "startsecs": "0"},
            "quick": {"command": "sleep 1000", "startsecs": "0"},
        }, health={"app": {"after": "slow"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("ready", service="app", timeout=15)
        document = ask(pod, "timeline", "--json")
        assert document["critical_chain"] == ["coditect-home", "slow", "app"]
        assert document["services"][0]["name"] == "coditect-home"
        seeding, slow, app, quick = (service_row(document, n)
                                     for n in ("coditect-home", "slow", "app", "quick"))
        assert seeding["spawned"] == 0.0 and seeding["ready"] <= slow["spawned"] + 0.01
        assert app["after"] == ["slow"] and app["waited_for"] == "slow"
        assert slow["took"] >= 0.9 and app["spawned"] >= slow["ready"] - 0.01
        assert slow["critical"] and app["critical"] and not quick["critical"]
        assert document["ready_after"] >= slow["ready"]
        text = podctl(pod, "timeline").stdout
        assert "critical chain: coditect-home -> slow -> app" in text
    finally:
        pod.stop()


def test_events_follow_sees_a_restart_and_the_shutdown_before_anything_stops(
        tmp_path: Path) -> None:
    """`podctl events -f` prints the restart's events as JSON lines; on SIGTERM the `signal`
    line (the drain's notice) comes before the drain stops the service, and the stream ends
    with the pod."""
    catalogue = write_catalogue(tmp_path / "cat", {"svc": {"command": "sleep 1000",
                                                           "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    follower: subprocess.Popen[bytes] | None = None
    lines: list[dict[str, Any]] = []
    try:
        pod.wait_event("health_listening")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CODITECT_RUN": str(pod.run_dir)}
        follower = subprocess.Popen([PYTHON, "-m", "healthz.podctl", "events", "-f"],
                                    stdout=subprocess.PIPE, env=env)
        stdout = follower.stdout
        assert stdout is not None

        def read() -> None:
            for raw in stdout:
                lines.append(json.loads(raw))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def named(event: str) -> list[dict[str, Any]]:
            return [line for line in list(lines) if line["event"] == event]

        wait_for(lambda: named("booted"), 10, "the recent events, the boot's among them")
        assert podctl(pod, "restart", "svc").returncode == 0
        wait_for(lambda: len(named("spawned")) >= 2, 10, "the restart's spawn followed")
        assert named("exited")[0]["service"] == "svc"
        pod.signal(signal.SIGTERM)
        assert pod.wait() == 0
        assert follower.wait(DEADLINE) == 0  # the pod ended the stream
        reader.join(DEADLINE)
        events = [line["event"] for line in lines]
        assert "signal" in events and "drained" in events
        drain_stops = [i for i, line in enumerate(lines) if line["event"] == "stopping"][1:]
        assert drain_stops and events.index("signal") < drain_stops[0]
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait(10)
        pod.stop()


async def test_a_follower_that_does_not_read_is_dropped_not_waited_for(
        tmp_path: Path) -> None:
    """A client asks to follow and reads nothing while 20 MB of events are published: each
    publish returns at once, and when the client reads at last it gets what was queued, a
    final `follower_dropped` line, and the end of the stream."""
    pod = FakePod(default_pod_services())
    feed = EventFeed(history=1, queue_limit=50)
    async with running_faces(pod, tmp_path, feed=feed) as faces:
        reader, writer = await asyncio.open_unix_connection(
            str(faces.socket_path), limit=1 << 20)
        writer.write(b"GET /v1/events?follow=1 HTTP/1.0\r\nHost: pod\r\n\r\n")
        await writer.drain()
        await until(lambda: feed.followers == 1, 10, "the follower registered")
        began = time.perf_counter()
        for n in range(2000):
            feed.publish("spawned", "info", {"ts": "2026-01-01T00:00:00.000Z",
                                             "service": "x", "pad": "y" * 10_000, "n": n})
            if n % 100 == 0:
                await asyncio.sleep(0)  # let the handler write what it can
        assert time.perf_counter() - began < 5  # publishing never waited on the reader
        body = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        last = json.loads(body.rstrip(b"\n").rsplit(b"\n", 1)[-1])
        assert last["event"] == "follower_dropped"
        await until(lambda: feed.followers == 0, 10, "the dropped follower forgotten")


async def test_a_flush_hands_the_notice_to_every_follower_before_it_returns(
        tmp_path: Path) -> None:
    """What the drain waits for before it stops anything: once `flush` returns, the `signal`
    line is already in the follower's socket (read here without waiting)."""
    pod = FakePod(default_pod_services())
    feed = EventFeed()
    async with running_faces(pod, tmp_path, feed=feed) as faces:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(faces.socket_path))
            client.sendall(b"GET /v1/events?follow=1 HTTP/1.0\r\nHost: pod\r\n\r\n")
            await until(lambda: feed.followers == 1, 10, "the follower registered")
            feed.publish("signal", "info", {"ts": "2026-01-01T00:00:00.000Z",
                                            "signal": "SIGTERM"})
            await feed.flush(10)
            received = b""
            with contextlib.suppress(BlockingIOError):
                while chunk := client.recv(65536, socket.MSG_DONTWAIT):
                    received += chunk
            assert b'"event": "signal"' in received


def metric_ports(pod: RunningPod) -> set[tuple[str, str]]:
    text = get(pod.health_port, "/metrics")[1]
    return {(s.labels["port"], s.labels["service"])
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "coditect_pod_listening_port"}


def test_ports_attributes_a_service_and_a_terminal_s_escaped_server(tmp_path: Path) -> None:
    """A service's own listener is its; a server its run started in a session of its own (as
    a terminal's `setsid`) is still its run's, shown `via` the mark with its pid. /metrics has
    both by port and service only; the health port is the engine's."""
    web_port, dev_port = free_port(), free_port()
    pidfile = tmp_path / "dev.pid"
    web = server_script(tmp_path, "web", web_port)
    dev = server_script(tmp_path, "devserver", dev_port)
    term = tmp_path / "term.sh"
    term.write_text(f"(setsid {PYTHON} {dev} & echo $! > {pidfile})\nexec sleep 1000\n")
    catalogue = write_catalogue(tmp_path / "cat", {
        "web": {"command": f"{PYTHON} {web}", "startsecs": "0"},
        "term": {"command": f"sh {term}", "startsecs": "0"},
    })
    pod = RunningPod(catalogue, tmp_path / "home")
    escaped = None
    try:
        pod.wait_event("health_listening")
        escaped = wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10,
                           "the dev server's pid")
        wait_for(lambda: listening(web_port) and listening(dev_port), 10, "both listening")
        found = wait_for(
            lambda: (ports := {p["port"]: p for p in ask(pod, "ports", "--json")["ports"]})
            and dev_port in ports and ports, 10, "both ports seen")
        assert (found[web_port]["service"], found[web_port]["via"]) == ("web", "tree")
        assert (found[dev_port]["service"], found[dev_port]["via"]) == ("term", "mark")
        assert found[dev_port]["pid"] == int(escaped)
        assert found[dev_port]["command"]  # the process's name, on the control socket only
        assert found[pod.health_port]["service"] == "coditect-start"
        series = metric_ports(pod)
        assert {(str(web_port), "web"), (str(dev_port), "term"),
                (str(pod.health_port), "coditect-start")} <= series
        assert str(dev) not in get(pod.health_port, "/metrics")[1]
        assert f"{dev_port}" in podctl(pod, "ports").stdout
    finally:
        pod.stop()
        if escaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(escaped), signal.SIGKILL)
