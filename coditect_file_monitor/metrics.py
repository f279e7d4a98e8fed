"""Prometheus metrics and the liveness answer, on `--metrics-addr`.

`/metrics` is prometheus-client's exposition; `/`, `/healthz` and `/livez` answer 200 `ok`
while the observer and the worker threads are alive (or ROOT is gone and being waited for),
503 otherwise, so the pod's `[health:file-monitor] live = http://…/healthz` means something.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

PREFIX = "coditect_file_monitor"
_HEALTH_PATHS = frozenset({"/", "/healthz", "/livez"})


class QueueStats(Protocol):
    """What the metrics read from the queue (the coalescer) at scrape time."""

    capacity: int
    dropped: int
    coalesced: int

    @property
    def depth(self) -> int: ...


class _QueueCollector(Collector):
    def __init__(self, queue: QueueStats) -> None:
        self._queue = queue

    def collect(self) -> Iterable[Metric]:
        q = self._queue
        yield GaugeMetricFamily(f"{PREFIX}_queue_depth", "Changes waiting to be written.", q.depth)
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_capacity", "Changes the queue holds before dropping.", q.capacity
        )
        yield CounterMetricFamily(
            f"{PREFIX}_dropped_events", "Changes dropped because the queue was full.", q.dropped
        )
        yield CounterMetricFamily(
            f"{PREFIX}_coalesced_events", "Changes merged into a pending event.", q.coalesced
        )


class Metrics:
    def __init__(self, queue: QueueStats) -> None:
        # `_created` series would only double the scrape; the function is untyped upstream.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(_QueueCollector(queue))
        self.events = Counter(
            f"{PREFIX}_events", "Events written, by type.", ["event_type"], registry=r
        )
        self.checksum_seconds = Histogram(
            f"{PREFIX}_checksum_seconds",
            "Time to measure and hash one file.",
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=r,
        )
        self.checksum_errors = Counter(
            f"{PREFIX}_checksum_errors",
            "Files that could not be hashed, by reason.",
            ["reason"],
            registry=r,
        )
        self.write_errors = Counter(
            f"{PREFIX}_write_errors", "Event lines that could not be written.", registry=r
        )
        self.watching = Gauge(
            f"{PREFIX}_watching", "1 while ROOT is watched, 0 while it is missing.", registry=r
        )
        self.observer = Gauge(
            f"{PREFIX}_observer", "The observer in use (value 1).", ["kind"], registry=r
        )
        ProcessCollector(registry=r)
        for kind in ("created", "modified", "deleted", "moved"):
            self.events.labels(kind)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def parse_addr(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[::1]:PORT` or `:PORT` (all interfaces); raises ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdecimal()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104  # scraped from outside the pod
    return host, int(port)


def serve(
    addr: tuple[str, int], metrics: Metrics, healthy: Callable[[], bool]
) -> tuple[WSGIServer, str]:
    """Start serving on a daemon thread; returns the server and the bound `host:port`."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in _HEALTH_PATHS:
            ok = healthy()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n" if ok else b"unhealthy\n"]
        if path == "/metrics":
            body: Iterable[bytes] = metrics_app(environ, start_response)
            return body
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found\n"]

    host, port = addr
    server_class = _Server6 if ":" in host else _Server
    server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    bound_host, bound_port = str(server.server_address[0]), server.server_address[1]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return server, f"{shown}:{bound_port}"
