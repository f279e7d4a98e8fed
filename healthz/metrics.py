"""Prometheus metrics of the pod, prefix ``coditect_pod_``.

Two kinds. What the engine already knows (state, readiness, restart counts, exit codes) is read
from ``pod.snapshot()`` when Prometheus scrapes, so there is no second copy to drift. What only
happens in passing (a probe's duration, a dropped log line, a failed reload) the engine pushes
into the instruments here as it happens.

Nothing here may carry a failure reason, a command line or an environment value: /metrics is
served on the anonymous TCP listener. Labels are service names and short categories only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from healthz.model import Pod
from healthz.ports import ports
from healthz.proctree import ProcessTree

PREFIX = "coditect_pod"

# Probes are bounded by their `timeout` (default 2 s); the top buckets catch longer ones.
PROBE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)

# A restart reason is a label: it must be a short category ("exit", "liveness", "manual"),
# never free text that could carry a secret or explode the number of series.
_CATEGORY = re.compile(r"[a-z][a-z0-9_]{0,31}")


def _reason_label(reason: str) -> str:
    return reason if _CATEGORY.fullmatch(reason) else "other"


class _SnapshotCollector(Collector):
    """Turns the engine's snapshot into metric families at scrape time."""

    def __init__(self, pod: Pod, tree: ProcessTree) -> None:
        self._pod = pod
        self._tree = tree

    def describe(self) -> Iterator[Metric]:
        # Names only, so registering does not take a snapshot.
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        snap = self._pod.snapshot()
        up, ready, live, restarts, exit_code, rss, cpu = self._families()
        # The log file is the lossless copy: when it cannot be written, that must be seen
        # before anyone goes looking for lines that are not there.
        log_failures = CounterMetricFamily(
            f"{PREFIX}_log_write_failures",
            "Writes to a service's log file that failed (full or read-only volume); the lines "
            "still reached container stdout.", labels=["service"])
        oom_kills = CounterMetricFamily(
            f"{PREFIX}_service_oom_kills", "Runs of the service the kernel's OOM killer ended "
            "(the pod's memory cgroup counted the kill: docs/LIFECYCLE.md).", labels=["service"])
        for svc in snap.services:
            name = svc.name
            up.add_metric([name], 1.0 if svc.pid is not None else 0.0)
            ready.add_metric([name], 1.0 if svc.ready else 0.0)
            live.add_metric([name], 1.0 if svc.live else 0.0)
            by_reason: dict[str, int] = {}
            for reason, count in svc.restarts_by_reason.items():
                label = _reason_label(reason)
                by_reason[label] = by_reason.get(label, 0) + count
            # Restarts the engine counted without a reason still add up to the total.
            unexplained = svc.restarts - sum(by_reason.values())
            if unexplained > 0:
                by_reason["unknown"] = by_reason.get("unknown", 0) + unexplained
            for label, count in sorted(by_reason.items()):
                restarts.add_metric([name, label], float(count))
            log_failures.add_metric([name], float(svc.log_write_failures))
            oom_kills.add_metric([name], float(svc.oom_kills))
            if svc.last_exit_code is not None:
                exit_code.add_metric([name], float(svc.last_exit_code))
            if svc.pid is not None:
                usage = self._tree.usage(self._pod.pids_of(name), name)
                if usage is not None:
                    rss.add_metric([name], float(usage.rss_bytes))
                    cpu.add_metric([name], usage.cpu_seconds)
        mains = {svc.name: self._pod.pids_of(svc.name) for svc in snap.services}
        unattributed = self._tree.unattributed(mains)
        # Port and owner only: this face is anonymous, so no pid or command line.
        listening = GaugeMetricFamily(
            f"{PREFIX}_listening_port", "1 for each TCP port listening in the pod, by the "
            "service whose run holds it (empty: no process of the pod's).",
            labels=["port", "service"])
        seen: set[tuple[str, str]] = set()
        for port in ports(self._tree.census(), mains):
            labels = (str(port.port), port.service or "")
            if labels not in seen:  # the same port on IPv4 and IPv6 is one series
                seen.add(labels)
                listening.add_metric(list(labels), 1.0)
        self._tree.forget_dead()
        yield from (up, ready, live, restarts, exit_code, rss, cpu, log_failures, oom_kills,
                    listening)
        yield GaugeMetricFamily(
            f"{PREFIX}_unattributed_processes", "Live processes of the pod that no service's "
            "run accounts for (no run mark, not below a service's main process) and that are "
            "not the engine's own helpers: docs/LIFECYCLE.md says how a process gets there.",
            value=float(unattributed),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_draining", "1 from the moment the pod starts to drain.",
            value=1.0 if snap.draining else 0.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_home_degraded", "1 when $CODITECT_HOME could not be prepared at boot "
            "(full or read-only volume): services run, their logs reach stdout only.",
            value=1.0 if snap.home_problems else 0.0,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_notify_ignored",
            "sd_notify datagrams from a process of no service's current run, ignored.",
            value=float(snap.notify_ignored),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_started_up", "1 once every critical service has been ready since boot.",
            value=1.0 if snap.started_up else 0.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_loop_lag_seconds",
            "How late the engine's event loop was on its last lag timer.",
            value=self._pod.loop_lag(),
        )

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily,
        GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily,
    ]:
        svc = ["service"]
        return (
            GaugeMetricFamily(f"{PREFIX}_service_up", "1 while the service has a process.",
                              labels=svc),
            GaugeMetricFamily(f"{PREFIX}_service_ready", "1 while the service is ready.",
                              labels=svc),
            GaugeMetricFamily(f"{PREFIX}_service_live", "1 while the liveness probe holds.",
                              labels=svc),
            CounterMetricFamily(f"{PREFIX}_service_restarts", "Restarts, by reason.",
                                labels=["service", "reason"]),
            GaugeMetricFamily(f"{PREFIX}_service_last_exit_code",
                              "Exit status of the last process, or -signal.", labels=svc),
            GaugeMetricFamily(f"{PREFIX}_service_rss_bytes",
                              "Resident memory of the service's whole process tree.", labels=svc),
            CounterMetricFamily(f"{PREFIX}_service_cpu_seconds",
                                "User+system CPU of the service's whole process tree.",
                                labels=svc),
        )


class PodMetrics:
    """The pod's metrics registry: read from the engine at scrape time, pushed into by it.

    It has a registry of its own, not prometheus-client's global one, so two pods (or two
    tests) in one interpreter never collide and no library metrics sneak onto /metrics.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, pod: Pod, *, tree: ProcessTree | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_SnapshotCollector(pod, tree or ProcessTree()))
        self._probe_seconds = Histogram(
            "probe_duration_seconds", "Duration of health probes.",
            labelnames=("service", "kind"), namespace=PREFIX, buckets=PROBE_BUCKETS,
            registry=self.registry,
        )
        self._probe_failures = Counter(
            "probe_failures", "Health probes that failed.",
            labelnames=("service", "kind"), namespace=PREFIX, registry=self.registry,
        )
        self._dropped_lines = Counter(
            "log_lines_dropped", "Child log lines dropped from container stdout (the log file "
            "copy is lossless).", labelnames=("service",), namespace=PREFIX,
            registry=self.registry,
        )
        self._reload_failures = Counter(
            "reload_failures", "Catalogue reloads rejected as invalid.",
            namespace=PREFIX, registry=self.registry,
        )

    def observe_probe(self, service: str, kind: str, seconds: float, passed: bool) -> None:
        """Record one probe run; `kind` is "ready" or "live"."""
        self._probe_seconds.labels(service, kind).observe(seconds)
        if not passed:
            self._probe_failures.labels(service, kind).inc()

    def count_dropped_log_lines(self, service: str, n: int) -> None:
        """Record `n` lines dropped from container stdout because it blocked."""
        if n > 0:
            self._dropped_lines.labels(service).inc(n)

    def count_reload_failure(self) -> None:
        """Record a reload that was rejected."""
        self._reload_failures.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition, for the /metrics handler."""
        return generate_latest(self.registry)
