"""Load on the public health port cannot hurt the pod: the demo pod started with a soft
descriptor limit of 1024, 2,000 clients that connect, send nothing and reconnect when closed,
for a minute, while a well-behaved client asks /livez and a service is killed and respawned."""

from __future__ import annotations

import http.client
import os
import re
import signal
import statistics
import subprocess
import time
from pathlib import Path

from tests.demo_support import HEALTH_PORT, running_demo
from tests.support import PYTHON, ROOT, wait_for

CLIENTS = 2000
FLOOD_SECONDS = 60.0
GIVEN_SOFT_LIMIT = 1024
PROBE_EVERY = 0.05  # the well-behaved client's pacing between probes


def open_files_limit(pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of a process, from /proc."""
    text = Path(f"/proc/{pid}/limits").read_text()
    match = re.search(r"^Max open files\s+(\d+)\s+(\d+)", text, re.MULTILINE)
    assert match, text
    return int(match.group(1)), int(match.group(2))


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    assert match, text
    return int(match.group(1))


def settled_rss(pid: int) -> int | None:
    """The RSS once two readings a second apart agree within 64 KiB, else None."""
    first = rss_kib(pid)
    time.sleep(1.0)  # the second reading's spacing, bounded by the caller's deadline
    second = rss_kib(pid)
    return second if abs(second - first) <= 64 else None


def livez_ms() -> float | None:
    """One /livez from a fresh connection, as the kubelet asks; None when it failed."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", HEALTH_PORT, timeout=2.0)
    try:
        connection.request("GET", "/livez")
        ok = connection.getresponse().status == 200
    except OSError:
        ok = False
    finally:
        connection.close()
    return (time.monotonic() - started) * 1000 if ok else None


def test_idle_flood_starves_nothing() -> None:
    """With 2,000 idle reconnecting clients for a minute: no liveness restart, no spawn
    failure, every /livez answered, RSS bounded and given back, the flood really applied."""
    _, hard = open_files_limit(os.getpid())
    wrapper = ["prlimit", f"--nofile={GIVEN_SOFT_LIMIT}:"]
    with running_demo("coditect-flood-", wrapper=wrapper) as demo:
        engine = demo.pod.engine_pid
        # PID 1 raised its own soft limit to the hard one; its children keep the pod's.
        assert open_files_limit(engine) == (hard, hard)
        assert open_files_limit(demo.pid("theia"))[0] == GIVEN_SOFT_LIMIT
        # Settled first: the pod finishes its deferred work (metrics, the watcher, the cache
        # write) after it is ready, and /metrics is asked once as a scraper would.
        assert demo.health_get("/metrics")[0] == 200
        before_rss = wait_for(lambda: settled_rss(engine), 30, "the pod's RSS to settle")
        flood = subprocess.Popen(
            [PYTHON, str(ROOT / "tests" / "idle_flood.py"), "127.0.0.1", str(HEALTH_PORT),
             str(CLIENTS), str(FLOOD_SECONDS)],
            stdout=subprocess.PIPE, text=True)
        try:
            latencies: list[float | None] = []
            peak_rss = before_rss
            killed_api = False
            end = time.monotonic() + FLOOD_SECONDS
            while time.monotonic() < end:
                latencies.append(livez_ms())
                peak_rss = max(peak_rss, rss_kib(engine))
                if not killed_api and time.monotonic() > end - FLOOD_SECONDS / 2:
                    old = demo.pid("coditect-v5-api")
                    os.kill(old, signal.SIGKILL)
                    killed_api = True
                    # A respawn under the flood: the descriptors it needs were kept free.
                    wait_for(lambda old=old: demo.running("coditect-v5-api")  # type: ignore[misc]
                             and demo.pid("coditect-v5-api") != old, 20,
                             "coditect-v5-api respawned under the flood", interval=0.1)
                time.sleep(PROBE_EVERY)  # the client's pace, not a wait for a state
            output, _ = flood.communicate(timeout=30)
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait(10)
        answered = [ms for ms in latencies if ms is not None]
        p99 = statistics.quantiles(answered, n=100)[98] if len(answered) > 1 else float("nan")
        print(f"\n/livez under an idle flood of {CLIENTS}: {len(answered)}/{len(latencies)} "
              f"answered, p50 {statistics.median(answered):.1f} ms, p99 {p99:.1f} ms; "
              f"RSS {before_rss} → peak {peak_rss} KiB; flood {output.strip()}")
        assert '"connects"' in output and int(output.split('"connects": ')[1].split(",")[0]) \
            >= CLIENTS, f"the flood did not reach the port: {output}"
        assert len(answered) == len(latencies), "a well-behaved /livez failed under the flood"
        assert not demo.pod.events("liveness_failed"), demo.pod.events("liveness_failed")
        assert not demo.pod.events("spawn_failed"), demo.pod.events("spawn_failed")
        assert peak_rss - before_rss <= 10 * 1024, f"RSS grew {peak_rss - before_rss} KiB"
        # Once it is over, what the flood took stays bounded: Python's allocator keeps some of
        # the freed pools for reuse (a few MiB), so a second flood must not push it past the
        # bound either.
        after_first = wait_for(lambda: settled_rss(engine), 30, "RSS to settle after the flood")
        assert after_first - before_rss <= 10 * 1024
        subprocess.run([PYTHON, str(ROOT / "tests" / "idle_flood.py"), "127.0.0.1",
                        str(HEALTH_PORT), str(CLIENTS), "5"], check=True, timeout=60,
                       stdout=subprocess.DEVNULL)
        after_second = wait_for(lambda: settled_rss(engine), 30, "RSS to settle again")
        print(f"RSS after the flood {after_first} KiB, after a second one {after_second} KiB")
        assert after_second - before_rss <= 10 * 1024, "floods keep taking memory"
