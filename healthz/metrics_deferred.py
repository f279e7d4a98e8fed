"""The pod's metrics before prometheus-client is imported: what happens is held, then replayed.

A pod's boot is a burst of CPU (every service importing and starting at once), and nothing
scrapes /metrics before the pod is up. So the engine's boot (`start.boot`) hands this in place
of `PodMetrics` and builds the real one once its services are up, or at the first scrape if
that comes first; everything pushed before (probe durations and failures, dropped log lines,
rejected reloads) is replayed into it, so /metrics counts the boot too. Imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from healthz.metrics import PodMetrics


class Metrics(Protocol):
    """What the faces and the engine use of the metrics (`PodMetrics` or `DeferredMetrics`)."""

    @property
    def content_type(self) -> str: ...

    def observe_probe(self, service: str, kind: str, seconds: float, passed: bool) -> None: ...

    def count_dropped_log_lines(self, service: str, n: int) -> None: ...

    def count_reload_failure(self) -> None: ...

    def render(self) -> bytes: ...


class DeferredMetrics:
    """`PodMetrics` made by `factory` on `build()` or on the first `render()`; until then the
    pushed events are kept in order (a few per probe run: bounded by how long the engine
    waits before building, a few seconds of boot)."""

    def __init__(self, factory: Callable[[], PodMetrics]) -> None:
        self._factory = factory
        self._built: PodMetrics | None = None
        self._held: list[Callable[[PodMetrics], None]] = []

    @property
    def built(self) -> bool:
        return self._built is not None

    def build(self) -> PodMetrics:
        if self._built is None:
            metrics = self._factory()
            held, self._held = self._held, []
            for replay in held:
                replay(metrics)
            self._built = metrics
        return self._built

    @property
    def content_type(self) -> str:
        return self.build().content_type

    def render(self) -> bytes:
        return self.build().render()

    def observe_probe(self, service: str, kind: str, seconds: float, passed: bool) -> None:
        if self._built is not None:
            self._built.observe_probe(service, kind, seconds, passed)
        else:
            self._held.append(lambda m: m.observe_probe(service, kind, seconds, passed))

    def count_dropped_log_lines(self, service: str, n: int) -> None:
        if self._built is not None:
            self._built.count_dropped_log_lines(service, n)
        elif n > 0:
            self._held.append(lambda m: m.count_dropped_log_lines(service, n))

    def count_reload_failure(self) -> None:
        if self._built is not None:
            self._built.count_reload_failure()
        else:
            self._held.append(lambda m: m.count_reload_failure())
