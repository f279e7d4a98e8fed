"""How fast the pod can be seen: `podctl top` and `timeline`, a new listener in `podctl ports`,
and (through `/v1/events?follow=1`) how soon READY=1 and a missed watchdog are acted on.

Starts the engine on a small catalogue of its own (five idle services, a terminal-like service
that starts `setsid` dev servers on request, an sd_notify service and one whose watchdog
lapses), measures, prints the figures (docs/BENCHMARKS.md, "Seeing the pod"), and ends the pod
by pid. Run it in its own network namespace:

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python -m bench.observe'
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.pods import drain_then_kill
from bench.wait import wait_for
from healthz.podctl_client import PodClient
from healthz.podctl_errors import PodctlError

ROOT = Path(__file__).resolve().parent.parent
WATCHDOG = 1.0  # seconds: the lapsing service's `watchdog`

SERVER = """\
import socket, sys, time
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
time.sleep(1000)
"""
# A terminal: each port written to the FIFO becomes a dev server in a session of its own. An
# empty read (it reopened the FIFO before the last writer had closed it) is read again.
TERMINAL = """\
while true; do
  read port < "$FIFO" || continue
  setsid "$PYTHON" "$SERVER" "$port" &
done
"""
# READY=1 after a moment, its monotonic time appended to STAMPS first (CLOCK_MONOTONIC is one
# clock for every process of the machine).
NOTIFIER = """\
import os, socket, time
time.sleep(0.2)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
with open(os.environ["STAMPS"], "a") as stamps:
    stamps.write(f"{time.monotonic()}\\n")
sock.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
if os.environ.get("PING_ONCE"):
    with open(os.environ["STAMPS"] + ".ping", "a") as stamps:
        stamps.write(f"{time.monotonic()}\\n")
    sock.sendto(b"WATCHDOG=1", os.environ["NOTIFY_SOCKET"])
time.sleep(1000)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def catalogue(base: Path) -> Path:
    for name, text in (("server.py", SERVER), ("terminal.sh", TERMINAL),
                       ("notifier.py", NOTIFIER)):
        (base / name).write_text(text)
    os.mkfifo(base / "fifo")
    programs = {f"idle{n}": {"command": "sleep 1000"} for n in range(5)}
    programs["term"] = {"command": f"sh {base / 'terminal.sh'}", "environment":
                        f'FIFO="{base / "fifo"}",PYTHON="{sys.executable}",'
                        f'SERVER="{base / "server.py"}"'}
    programs["notified"] = {"command": f"{sys.executable} {base / 'notifier.py'}",
                            "environment": f'STAMPS="{base / "ready"}"'}
    programs["lapsing"] = {"command": f"{sys.executable} {base / 'notifier.py'}",
                           "environment": f'STAMPS="{base / "lapsing"}",PING_ONCE="1"'}
    health = {"idle1": "after=idle0", "idle2": "after=idle1", "notified": "ready=notify",
              "lapsing": f"ready=notify\nwatchdog={WATCHDOG:g}s"}
    directory = base / "cat"
    (directory / "conf.d").mkdir(parents=True)
    (directory / "supervisord.conf").write_text(
        "[supervisord]\nnodaemon=true\n\n[include]\nfiles = conf.d/*.conf\n")
    for name, keys in programs.items():
        text = f"[program:{name}]\nstartsecs=0\n" + "".join(f"{k}={v}\n" for k, v in keys.items())
        if name in health:
            text += f"\n[health:{name}]\n{health[name]}\n"
        (directory / "conf.d" / f"{name}.conf").write_text(text)
    return directory


class Follower:
    """`GET /v1/events?follow=1` read in a thread, each event stamped with its arrival."""

    def __init__(self, socket_path: str) -> None:
        self.events: list[tuple[float, dict[str, object]]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(socket_path)
        self._sock.sendall(b"GET /v1/events?follow=1 HTTP/1.0\r\nHost: pod\r\n\r\n")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self._sock.makefile("rb") as stream:
            for raw in stream:
                now = time.monotonic()
                if raw.startswith(b"{"):  # an event, not the answer's head
                    self.events.append((now, json.loads(raw)))

    def named(self, event: str, service: str) -> list[float]:
        return [at for at, e in list(self.events)
                if e.get("event") == event and e.get("service") == service]

    def close(self) -> None:
        self._sock.close()


def stamps(path: Path) -> list[float]:
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def command_ms(socket_path: str, verb: str, runs: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    took = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "healthz.podctl", "--socket", socket_path, verb,
                        "--json"], check=True, capture_output=True, env=env, timeout=30)
        took.append((time.perf_counter() - began) * 1000)
    return took


def route_ms(client: PodClient, route: str, runs: int) -> list[float]:
    took = []
    for _ in range(runs):
        began = time.perf_counter()
        client.call("GET", route)
        took.append((time.perf_counter() - began) * 1000)
        time.sleep(0.05)  # spaced out, as a person's refresh is: not a wait for anything
    return took


def listener_seen_s(client: PodClient, fifo: Path, samples: int) -> list[float]:
    took = []
    for _ in range(samples):
        port = free_port()
        with open(fifo, "w") as f:
            f.write(f"{port}\n")

        def listening(port: int = port) -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 10, f"the dev server on {port}", interval=0.002)
        began = time.monotonic()

        def seen(port: int = port) -> bool:
            return any(p["port"] == port and p["service"] == "term"
                       for p in client.call("GET", "/v1/ports")["ports"])

        wait_for(seen, 10, f"port {port} in /v1/ports", interval=0.02)
        took.append(time.monotonic() - began)
    return took


def summary(values: list[float], unit: str) -> str:
    return (f"median {statistics.median(values):.1f} {unit}, min {min(values):.1f}, "
            f"max {max(values):.1f} (n={len(values)})")


def measure(runs: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="coditect-observe-"))
    run_dir = base / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pod = subprocess.Popen(
        [sys.executable, "-m", "start", "--catalogue", str(catalogue(base)), "--home",
         str(base / "home"), "--run-dir", str(run_dir), "--health-addr",
         f"127.0.0.1:{free_port()}", "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    socket_path = str(run_dir / "podctl.sock")
    try:
        client = PodClient(socket_path, 30)

        def answering() -> bool:
            try:
                return client.request("GET", "/v1/status").status == 200
            except PodctlError:
                return False  # not bound, or bound and not yet listening

        wait_for(answering, 30, "the control socket answering")
        follower = Follower(socket_path)
        wait_for(lambda: len(follower.named("watchdog_missed", "lapsing")) >= 1, 30,
                 "the boot settled (the first watchdog lapse)")
        for verb in ("top", "timeline"):
            print(f"podctl {verb} --json, the whole command: "
                  f"{summary(command_ms(socket_path, verb, runs), 'ms')}")
            print(f"  GET /v1/{verb} alone: {summary(route_ms(client, f'/v1/{verb}', runs), 'ms')}")
        seen = listener_seen_s(client, base / "fifo", 10)
        print(f"a setsid dev server under `term` listening -> in /v1/ports as term's: "
              f"{summary([s * 1000 for s in seen], 'ms')}")
        lags = []
        for _ in range(runs):
            before = len(follower.named("ready", "notified"))
            client.call("POST", "/v1/services/notified/restart")

            def again(before: int = before) -> bool:
                return len(follower.named("ready", "notified")) > before

            wait_for(again, 10, "notified ready again")
            lags.append((follower.named("ready", "notified")[-1]
                         - stamps(base / "ready")[-1]) * 1000)
        print(f"ready=notify: READY=1 sent -> `ready` event read by a follower: "
              f"{summary(lags, 'ms')}")
        wait_for(lambda: len(follower.named("stopping", "lapsing")) >= 5, 60,
                 "five watchdog lapses")
        pings = stamps(base / "lapsing.ping")
        stops = follower.named("stopping", "lapsing")
        late = [(stop - ping - WATCHDOG) * 1000 for ping, stop in zip(pings, stops, strict=False)]
        print(f"watchdog={WATCHDOG:g}s: last WATCHDOG=1 + {WATCHDOG:g} s -> `stopping` (the "
              f"restart begins): {summary(late, 'ms')} late")
        follower.close()
    finally:
        drain_then_kill(pod)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    measure(parser.parse_args().runs)


if __name__ == "__main__":
    main()
