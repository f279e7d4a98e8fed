"""/metrics: families read from the engine's snapshot at scrape time, the instruments the
engine pushes into, and RSS/CPU of a real process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bench.wait import until
from healthz.metrics import PodMetrics
from healthz.metrics_deferred import DeferredMetrics
from healthz.model import State
from healthz.proctree import ProcessTree
from tests.health_support import FakePod, default_pod_services, running_faces, service
from tests.support import unmeasured


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def tree_process() -> Iterator[subprocess.Popen[bytes]]:
    """A real service: a Python parent with two children, in a process group of its own."""
    code = textwrap.dedent("""
        import subprocess, sys, time
        kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
                for _ in range(2)]
        print("up", flush=True)
        time.sleep(120)
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True,
        env=unmeasured(),  # three bare interpreters, whatever measures the suite
    )
    try:
        yield child
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the group is the parent's pid: parent and kids
        child.wait(timeout=10)
        assert child.stdout is not None
        child.stdout.close()


def test_snapshot_families() -> None:
    """up, ready, live, restarts by reason, last exit code come from the snapshot as it is."""
    pod = FakePod([
        service("theia", pid=4242, restarts=5, restarts_by_reason={"liveness": 2, "exit": 1},
                last_exit_code=-9, oom_kills=2),
        service("codi2", critical=False, ready=False, live=False, state=State.BACKOFF,
                log_write_failures=3),
    ])
    pod.draining = True
    pod.lag = 0.25
    text = PodMetrics(pod).render().decode()
    assert value(text, "coditect_pod_service_up", service="theia") == 1.0
    assert value(text, "coditect_pod_service_up", service="codi2") == 0.0
    assert value(text, "coditect_pod_service_ready", service="codi2") == 0.0
    assert value(text, "coditect_pod_service_live", service="codi2") == 0.0
    restarts = "coditect_pod_service_restarts_total"
    assert value(text, restarts, service="theia", reason="liveness") == 2.0
    assert value(text, restarts, service="theia", reason="exit") == 1.0
    # Counted without a reason: still part of the total.
    assert value(text, restarts, service="theia", reason="unknown") == 2.0
    assert value(text, "coditect_pod_service_last_exit_code", service="theia") == -9.0
    assert value(text, "coditect_pod_service_last_exit_code", service="codi2") is None
    assert value(text, "coditect_pod_log_write_failures_total", service="codi2") == 3.0
    assert value(text, "coditect_pod_log_write_failures_total", service="theia") == 0.0
    assert value(text, "coditect_pod_service_oom_kills_total", service="theia") == 2.0
    assert value(text, "coditect_pod_service_oom_kills_total", service="codi2") == 0.0
    assert value(text, "coditect_pod_draining") == 1.0
    assert value(text, "coditect_pod_started_up") == 0.0
    assert value(text, "coditect_pod_loop_lag_seconds") == 0.25


def test_scrape_reads_the_snapshot_each_time() -> None:
    """A second scrape shows the engine's new counts: there is no copy kept here."""
    pod = FakePod([service("theia", restarts=1, restarts_by_reason={"exit": 1})])
    metrics = PodMetrics(pod)
    name = "coditect_pod_service_restarts_total"
    assert value(metrics.render().decode(), name, service="theia", reason="exit") == 1.0
    pod.update("theia", restarts=4, restarts_by_reason={"exit": 4})
    assert value(metrics.render().decode(), name, service="theia", reason="exit") == 4.0


def test_free_text_restart_reason_is_not_a_label() -> None:
    """A restart reason that is not a short category is counted as `other`, never shown."""
    pod = FakePod([service("theia", restarts=1, restarts_by_reason={"token=abc123 leaked": 1})])
    text = PodMetrics(pod).render().decode()
    assert "abc123" not in text
    assert value(text, "coditect_pod_service_restarts_total", service="theia",
                 reason="other") == 1.0


def test_pushed_instruments() -> None:
    """observe_probe, count_dropped_log_lines and count_reload_failure land in the text."""
    pod = FakePod([service("theia")])
    metrics = PodMetrics(pod)
    metrics.observe_probe("theia", "ready", 0.02, True)
    metrics.observe_probe("theia", "ready", 3.0, False)
    metrics.observe_probe("theia", "live", 0.001, True)
    metrics.count_dropped_log_lines("theia", 7)
    metrics.count_dropped_log_lines("theia", 0)
    metrics.count_reload_failure()
    text = metrics.render().decode()
    hist = "coditect_pod_probe_duration_seconds"
    assert value(text, hist + "_count", service="theia", kind="ready") == 2.0
    assert value(text, hist + "_sum", service="theia", kind="ready") == pytest.approx(3.02)
    assert value(text, hist + "_bucket", service="theia", kind="ready", le="0.025") == 1.0
    assert value(text, "coditect_pod_probe_failures_total", service="theia", kind="ready") == 1.0
    assert value(text, "coditect_pod_probe_failures_total", service="theia", kind="live") is None
    assert value(text, "coditect_pod_log_lines_dropped_total", service="theia") == 7.0
    assert value(text, "coditect_pod_reload_failures_total") == 1.0


def test_deferred_metrics_replay_what_came_before() -> None:
    """What the engine pushes before PodMetrics exists (the boot) is in the first scrape, in
    the same figures as if it had been there all along; after that, pushes go straight in."""
    pod = FakePod([service("theia")])
    made: list[PodMetrics] = []

    def factory() -> PodMetrics:
        made.append(PodMetrics(pod))
        return made[-1]

    metrics = DeferredMetrics(factory)
    metrics.observe_probe("theia", "ready", 0.02, True)
    metrics.observe_probe("theia", "ready", 3.0, False)
    metrics.count_dropped_log_lines("theia", 7)
    metrics.count_reload_failure()
    assert not made and not metrics.built
    text = metrics.render().decode()
    assert len(made) == 1
    hist = "coditect_pod_probe_duration_seconds"
    assert value(text, hist + "_count", service="theia", kind="ready") == 2.0
    assert value(text, "coditect_pod_probe_failures_total", service="theia", kind="ready") == 1.0
    assert value(text, "coditect_pod_log_lines_dropped_total", service="theia") == 7.0
    assert value(text, "coditect_pod_reload_failures_total") == 1.0
    metrics.count_reload_failure()
    assert metrics.build() is made[0]
    assert value(metrics.render().decode(), "coditect_pod_reload_failures_total") == 2.0
    assert metrics.content_type == made[0].content_type


def test_registry_is_private() -> None:
    """Two PodMetrics coexist and nothing lands in prometheus-client's global registry."""
    pod = FakePod([service("theia")])
    PodMetrics(pod).count_reload_failure()
    PodMetrics(pod).count_reload_failure()
    assert not any(m.name.startswith("coditect_pod") for m in REGISTRY.collect())


async def test_metrics_endpoint_reports_a_real_tree(
    tree_process: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """/metrics over TCP parses and its RSS covers the parent and both children."""
    assert tree_process.stdout is not None
    assert tree_process.stdout.readline() == b"up\n"  # the children exist once this is printed
    pod = FakePod(default_pod_services())
    pod.all_ready()
    pod.update("theia", pid=tree_process.pid)
    pod.pids["theia"] = [tree_process.pid]
    parent = psutil.Process(tree_process.pid)
    await until(lambda: len(parent.children(recursive=True)) == 2, what="two children")
    members = [parent, *parent.children(recursive=True)]
    parent_rss = parent.memory_info().rss
    async with running_faces(pod, tmp_path) as faces:
        status, text = await faces.get("tcp", "/metrics")
    assert status == 200
    rss = value(text, "coditect_pod_service_rss_bytes", service="theia")
    assert rss is not None
    # Three interpreters: well above the parent alone, near the sum measured just before.
    assert rss > 2 * parent_rss
    assert rss == pytest.approx(sum(p.memory_info().rss for p in members), rel=0.2)
    cpu = value(text, "coditect_pod_service_cpu_seconds_total", service="theia")
    assert cpu is not None and cpu > 0.0
    # Services without a process have no resource samples at all.
    assert value(text, "coditect_pod_service_rss_bytes", service="codi2") is None


def test_vanished_processes_are_tolerated() -> None:
    """A pid that has exited (or never existed) yields no sample and no error."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    pod = FakePod([service("theia", pid=child.pid)])
    pod.pids["theia"] = [child.pid]
    text = PodMetrics(pod).render().decode()
    assert value(text, "coditect_pod_service_rss_bytes", service="theia") is None
    assert ProcessTree().usage([child.pid]) is None


def test_cpu_percent_is_meaningful_on_the_second_read() -> None:
    """The first read of a busy process is 0.0; a later read of the same tree is not."""
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 60\nwhile time.time() < end: pass"]
    )
    try:
        tree = ProcessTree()
        first = tree.usage([busy.pid])
        assert first is not None and first.cpu_percent == 0.0
        deadline = time.monotonic() + 10
        while True:
            usage = tree.usage([busy.pid])
            assert usage is not None
            if usage.cpu_percent > 10.0:
                break
            assert time.monotonic() < deadline, "cpu_percent stayed low"
            time.sleep(0.05)  # polling with a deadline: a percentage needs time between reads
    finally:
        os.kill(busy.pid, signal.SIGKILL)
        busy.wait(timeout=10)
