"""How long a reload of the demo catalogue takes, and how long /livez waits meanwhile.

Starts the engine on the production catalogue with the demo overlay (its services may fail to
bind where another demo runs: a reload's parse does not care), then asks for `--reloads`
reloads through the control socket one after another, timing each answer, while a thread asks
/livez in a loop. Prints the figures; run it in a checkout to compare two versions:

    .venv/bin/python -m bench.reload_latency [--reloads 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.pods import drain_then_kill
from bench.wait import wait_for
from healthz.podctl_client import PodClient

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LivezSampler:
    """/livez asked back to back in a thread: each answer's status and latency."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LivezSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/livez",
                                            timeout=20) as answer:
                    status = answer.status
            except OSError as error:
                self.failures.append(str(error))
                continue
            self.latencies.append(time.perf_counter() - began)
            if status != 200:
                self.failures.append(f"HTTP {status}")
            self._stop.wait(0.005)


def _watch_for_boot_end(pod: subprocess.Popen[bytes], watching: threading.Event) -> None:
    assert pod.stdout is not None
    for line in pod.stdout:  # read to the end, so the pod never blocks on its stdout
        if b'"watching_catalogue"' in line:
            watching.set()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def measure(reloads: int) -> int:
    base = Path(tempfile.mkdtemp(prefix="coditect-reload-latency-"))
    port = _free_port()
    run_dir = base / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JWT_SECRET": "demo-only-not-a-secret",
           "FDB_CLUSTER_FILE": str(ROOT / "demo" / "fdb.cluster"),
           "CODITECT_WORKSPACE": str(base / "workspace"), "CODITECT_NGINX_DIR": str(base / "nginx"),
           "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    (base / "workspace").mkdir()
    pod = subprocess.Popen(
        [sys.executable, "-m", "start", "--catalogue", str(ROOT / "supervisor"),
         "--overlay", str(ROOT / "demo" / "overlay.conf"), "--home", str(base / "home"),
         "--run-dir", str(run_dir), "--health-addr", f"127.0.0.1:{port}", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    watching = threading.Event()
    threading.Thread(target=_watch_for_boot_end, args=(pod, watching), daemon=True).start()
    try:
        client = PodClient(str(run_dir / "podctl.sock"), 30)
        # Once the boot's deferred work (watcher, cache) is done: time reloads only.
        wait_for(watching.is_set, 30, "the watcher started (the boot's deferred work done)")
        took: list[float] = []
        with LivezSampler(port) as livez:
            for _ in range(reloads):
                began = time.perf_counter()
                answer = client.call("POST", "/v1/reload")
                took.append(time.perf_counter() - began)
                if not answer.get("ok"):
                    print(f"reload not applied: {answer}")
                    return 1
        print(f"reload of the demo catalogue, {reloads} in a row (POST /v1/reload, answered "
              f"once applied): median {_ms(statistics.median(took))}, min {_ms(min(took))}, "
              f"max {_ms(max(took))}")
        if livez.latencies:
            print(f"/livez meanwhile: {len(livez.latencies)} answers, median "
                  f"{_ms(statistics.median(livez.latencies))}, max {_ms(max(livez.latencies))}, "
                  f"{len(livez.failures)} failures")
        return 0
    finally:
        drain_then_kill(pod)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=20)
    sys.exit(measure(parser.parse_args().reloads))


if __name__ == "__main__":
    main()
