"""The supervisor's own events (spawned, exited, backoff, …) as structlog JSON on stdout.

structlog is imported once the services' start-up burst is over (boot must be fast, see
start.boot); what happens before that is held, each with its own timestamp and its place in
the console's queue (`Console.reserve`), and written there once structlog is ready: children's
lines read meanwhile wait behind it, so stdout stays in the order things happened.

In JSON, an event has the keys of a child's line (`ts`, `service`, `stream`, `pid`,
`message`) before its own (`level`, `event`, its fields, `logger`): one schema for the
whole stream (docs/EVENTS.md, "One stream").
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from start.logs import Console, Slot, StructlogSink

if TYPE_CHECKING:
    from healthz.eventfeed import EventFeed

ENGINE = "coditect-start"  # the `service` of the pod's own events, and their `logger`


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventLog:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._held: list[tuple[str, str, dict[str, Any], Slot]] = []
        self._logger: Any = None
        self.on_event: Callable[[], None] | None = None  # start.boot trims the heap after work
        # Those who follow the pod over the control socket see each event as it happens, held
        # or not (`podctl events -f`).
        self.feed: EventFeed | None = None

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        fields.setdefault("ts", _now())
        if self.feed is not None:
            self.feed.publish(event, level, fields)
        if self.on_event is not None:
            self.on_event()
        if self._logger is None:
            self._held.append((event, level, fields, self.console.reserve()))
            return
        getattr(self._logger, level)(event, **fields)

    def configure(self) -> None:
        import structlog  # boot speed: configured with the health libraries, after the spawns

        # A person's console shows an event as structlog does; JSON gets the stream's schema.
        processors: list[Any] = [structlog.processors.add_log_level, _source]
        if self.console.pretty:
            processors.append(structlog.dev.ConsoleRenderer(colors=True))
        else:
            processors += [_schema, structlog.processors.JSONRenderer(ensure_ascii=False)]
        sink = StructlogSink(self.console)
        structlog.configure(
            processors=processors,
            # StructlogSink is file-like enough for WriteLogger (write and flush).
            logger_factory=structlog.WriteLoggerFactory(file=sink),  # type: ignore[arg-type]
            cache_logger_on_first_use=True,
        )
        self._logger = structlog.get_logger()
        held, self._held = self._held, []
        for event, level, fields, slot in held:
            sink.slots.append(slot)  # a WriteLogger writes each event in one write
            getattr(self._logger, level)(event, **fields)


def _source(_logger: Any, _method: str,
            event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("logger", ENGINE)
    return event


def _schema(_logger: Any, _method: str, fields: MutableMapping[str, Any]) -> dict[str, Any]:
    """The keys every stdout line has, in a child line's order, then the event's own. `service`
    and `pid` are what the event is about: the pod's own events are the engine's (its pid);
    a service's event without a process of its own (`ready`, `backoff`) has `pid` null."""
    name = fields.pop("event")
    ts = fields.pop("ts", None) or _now()  # the health service's events come without one
    level = fields.pop("level", "info")
    logger = fields.pop("logger", ENGINE)
    service = fields.pop("service", ENGINE)
    pid = fields.pop("pid", os.getpid() if service == ENGINE else None)
    return {"ts": ts, "service": service, "stream": "event", "pid": pid,
            "message": _message(name, service, pid, fields), "level": level, "event": name,
            **fields, "logger": logger}


def _message(name: str, service: str, pid: object, fields: MutableMapping[str, Any]) -> str:
    """The event as a line a person reads where only `message` is shown (a log viewer's
    summary): `exited theia pid=42 status="exit 1" ran_seconds=3.2`."""
    words = [name] if service == ENGINE else [name, service]
    if pid is not None and service != ENGINE:
        words.append(f"pid={pid}")
    words += (f"{key}={_value(value)}" for key, value in fields.items())
    return " ".join(words)


def _value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str,
                                                           ensure_ascii=False)
    if isinstance(value, str) and (not text or any(c in text for c in ' "=\n')):
        return json.dumps(value, ensure_ascii=False)
    return text
