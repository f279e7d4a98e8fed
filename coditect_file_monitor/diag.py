"""The monitor's own diagnostics: one JSON object a line on stderr (and in the trace log).

stderr gets INFO and above; `--trace-log` gets DEBUG as well. watchdog's own warnings (an
inotify queue overflow, an unreadable snapshot) come through the same formatter. Messages
that a storm could repeat thousands of times go through `RateLimited`.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from coditect_file_monitor.events import rfc3339_utc

LOGGER_NAME = "coditect_file_monitor"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": rfc3339_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(trace_log: str | None, *, max_bytes: int, backups: int) -> logging.Logger:
    # A broken stderr or trace log must never take the monitor down, nor print tracebacks.
    logging.raiseExceptions = False
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.DEBUG)
    formatter = JsonFormatter()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.INFO)
    stderr.setFormatter(formatter)
    root.addHandler(stderr)
    if trace_log:
        os.makedirs(os.path.dirname(trace_log) or ".", exist_ok=True)
        trace = logging.handlers.RotatingFileHandler(
            trace_log, maxBytes=max_bytes, backupCount=max(1, backups), delay=True
        )
        trace.setLevel(logging.DEBUG)
        trace.setFormatter(formatter)
        root.addHandler(trace)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    return logging.getLogger(LOGGER_NAME)


def say(log: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """`log.log` with structured fields that land as keys of the JSON line."""
    log.log(level, message, extra={"fields": fields})


class RateLimited:
    """At most one message per key per `interval`; the ones held back are counted and the
    count rides along with the next message for that key (`suppressed`)."""

    def __init__(
        self,
        log: logging.Logger,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, key: str, level: int, message: str, **fields: Any) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = self._held.get(key, 0) + 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            fields["suppressed"] = held
        say(self._log, level, message, **fields)
