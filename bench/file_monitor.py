"""Benchmark coditect-file-monitor as the pod runs it, on a real tree.

    .venv/bin/python bench/file_monitor.py            # 100,000-file tree
    .venv/bin/python bench/file_monitor.py --quick    # 5,000 files, smaller runs

Figures (inotify and --poll):
- start-up: spawn to "watching" (watches in place / first snapshot taken), and RSS then;
- sustained events/s: N new files written as fast as one Python writer can, with checksums,
  first write to last event line read from the monitor's stdout;
- write-to-event latency (median, p99): one new file every few ms, time from the write
  returning to its line arriving, with the default 0.1 s coalescing window and with 0.01 s;
- RSS at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

POD_FLAGS = ["--recursive", "--checksums", "--format", "json",
             "--ignore", ".git,node_modules,target,dist,build,.coditect"]


def make_tree(root: Path, files: int, per_dir: int = 100) -> None:
    payload = b"x" * 256
    for n in range(files):
        d = root / f"d{n // per_dir // 100:03}" / f"e{n // per_dir % 100:02}"
        if n % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{n}.txt").write_bytes(payload)


class Running:
    """The monitor with events on a pipe; a reader thread stamps each line on arrival."""

    def __init__(self, root: Path, extra: list[str]) -> None:
        self.arrivals: list[tuple[float, dict[str, object]]] = []
        self.lock = threading.Condition()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coditect_file_monitor", str(root), *POD_FLAGS,
             "--metrics-addr", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            record = json.loads(raw)
            if record["message"] == "watching":
                break
        else:
            raise SystemExit("monitor did not start")
        self.startup = time.perf_counter() - t0
        self.addr = record["metrics_addr"]
        self.rss_start = psutil.Process(self.proc.pid).memory_info().rss
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        threading.Thread(target=self._read, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            now = time.perf_counter()
            with self.lock:
                self.arrivals.append((now, json.loads(raw)))
                self.lock.notify_all()

    def wait_count(self, n: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.arrivals) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"only {len(self.arrivals)} of {n} events arrived")
                self.lock.wait(left)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://{self.addr}/metrics") as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return float("nan")

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def sustained(mon: Running, root: Path, n: int) -> tuple[float, float, float]:
    """(events/s, writer files/s, dropped)."""
    target = root / "burst"
    target.mkdir()
    mon.wait_count(1)
    base = len(mon.arrivals)
    payload = b"y" * 1024
    t0 = time.perf_counter()
    for i in range(n):
        (target / f"b{i}").write_bytes(payload)
    written = time.perf_counter() - t0
    mon.wait_count(base + n)
    last = mon.arrivals[base + n - 1][0]
    return n / (last - t0), n / written, mon.metric("coditect_file_monitor_dropped_events_total")


def latency(mon: Running, root: Path, samples: int, gap: float) -> tuple[float, float]:
    """(median, p99) milliseconds from a write returning to its event line arriving."""
    target = root / f"lat-{time.monotonic_ns()}"
    target.mkdir()
    mon.wait_count(len(mon.arrivals) + 1)
    written: dict[str, float] = {}
    rel = target.relative_to(root)
    for i in range(samples):
        name = f"{rel}/l{i}"
        (root / name).write_bytes(b"z")
        written[name] = time.perf_counter()
        time.sleep(gap)  # pacing the writer, not waiting for the monitor
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with mon.lock:
            seen = {str(e["file_path"]): t for t, e in mon.arrivals if e["file_path"] in written}
        if len(seen) == samples:
            break
        time.sleep(0.05)
    delays = sorted((seen[name] - written[name]) * 1000 for name in written if name in seen)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    return statistics.median(delays), p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    args = parser.parse_args()
    tree_files = 5_000 if args.quick else 100_000
    burst = 2_000 if args.quick else 20_000
    samples = 50 if args.quick else 300

    base = Path(tempfile.mkdtemp(prefix="fm-bench-"))
    try:
        root = base / "ws"
        root.mkdir()
        t0 = time.perf_counter()
        make_tree(root, tree_files)
        print(f"tree: {tree_files:,} files in {tree_files // 100:,} directories "
              f"(built in {time.perf_counter() - t0:.1f} s); {os.cpu_count()} CPUs; "
              f"checksums on, pod flags")
        rows = []
        for name, extra in [("inotify", []), ("poll 1s", ["--poll", "--poll-interval", "1"])]:
            mon = Running(root, [*extra, "--queue-size", str(burst + 1000)])
            try:
                rate, write_rate, dropped = sustained(mon, root, burst)
                med, p99 = latency(mon, root, samples, gap=0.005)
                rows.append((name, mon.startup, mon.rss_start, rate, write_rate, dropped,
                             med, p99, mon.rss()))
            finally:
                mon.stop()
            shutil.rmtree(root / "burst")
        mon = Running(root, ["--coalesce-window", "0.01"])
        try:
            fast_med, fast_p99 = latency(mon, root, samples, gap=0.005)
        finally:
            mon.stop()

        print(f"{'observer':<9} {'start-up':>9} {'RSS start':>10} {'events/s':>9} "
              f"{'writer/s':>9} {'dropped':>8} {'lat p50':>8} {'lat p99':>8} {'RSS end':>8}")
        for name, startup, rss0, rate, wrate, dropped, med, p99, rss1 in rows:
            print(f"{name:<9} {startup:>8.2f}s {rss0 / 2**20:>8.1f}Mi {rate:>9,.0f} "
                  f"{wrate:>9,.0f} {dropped:>8.0f} {med:>6.0f}ms {p99:>6.0f}ms "
                  f"{rss1 / 2**20:>6.1f}Mi")
        print(f"inotify, --coalesce-window 0.01: latency p50 {fast_med:.1f} ms, "
              f"p99 {fast_p99:.1f} ms")
        print(f"({burst:,} files for events/s, {samples} samples 5 ms apart for latency)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
