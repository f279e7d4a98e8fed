"""The supervisor's own events (spawned, exited, backoff, …) as structlog JSON on stdout.

structlog is imported once the services' start-up burst is over (boot must be fast, see
start.boot); what happens before that is held and written, with its own timestamp, once
structlog is ready.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from start.logs import Console, StructlogSink


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventLog:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._held: list[tuple[str, str, dict[str, Any]]] = []
        self._logger: Any = None
        self.on_event: Callable[[], None] | None = None  # start.boot trims the heap after work

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        fields.setdefault("ts", _now())
        if self.on_event is not None:
            self.on_event()
        if self._logger is None:
            self._held.append((event, level, fields))
            return
        getattr(self._logger, level)(event, **fields)

    def configure(self) -> None:
        import structlog  # boot speed: configured with the health libraries, after the spawns

        renderer: Any = (structlog.dev.ConsoleRenderer(colors=True) if self.console.pretty
                         else structlog.processors.JSONRenderer())
        structlog.configure(
            processors=[structlog.processors.add_log_level, _source, renderer],
            # StructlogSink is file-like enough for WriteLogger (write and flush).
            logger_factory=structlog.WriteLoggerFactory(
                file=StructlogSink(self.console)),  # type: ignore[arg-type]
            cache_logger_on_first_use=True,
        )
        self._logger = structlog.get_logger()
        held, self._held = self._held, []
        for event, level, fields in held:
            getattr(self._logger, level)(event, **fields)


def _source(_logger: Any, _method: str,
            event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("logger", "coditect-start")
    return event
