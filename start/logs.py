"""Log pumps: every byte a child writes goes to its log file (lossless, rotated) and, one JSON
object a line, to the container's stdout (bounded: a blocked stdout drops, never blocks).

The rotating file is supervisord's own handler (`supervisor.loggers.RotatingFileHandler`), so
`stdout_logfile_maxbytes` / `_backups` rotate exactly as they do under supervisord. We hand it
whole lines only, so a line never straddles two files.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHUNK = 1 << 16  # bytes per read: also how far a log file may run past its maxbytes
MAX_PARTIAL_LINE = 1 << 16  # a "line" longer than this is written in pieces
CONSOLE_BUFFER_BYTES = 4 << 20

COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")


_encode_string = json.JSONEncoder(ensure_ascii=False).encode
# Bytes a JSON string must escape: control characters, quote, backslash. Not "\n": the check
# runs on a whole chunk, whose newlines are the line ends the chunk is split on.
_JSON_ESCAPED = bytes([*(c for c in range(0x20) if c != 0x0A), ord('"'), ord("\\")])


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Console:
    """The container's stdout. Writes never block: past CONSOLE_BUFFER_BYTES lines are dropped
    and counted, so a stalled log collector cannot stall a child or the engine."""

    def __init__(self, fd: int = 1, *, fmt: str = "auto", limit: int = CONSOLE_BUFFER_BYTES):
        self.fd = fd
        self.limit = limit
        self.pretty = fmt == "console" or (fmt == "auto" and os.isatty(fd))
        self.dropped: dict[str, int] = {}
        self.on_drop: Callable[[str, int], None] | None = None
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer_armed = False
        self._colours: dict[str, str] = {}
        self._width = 8

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._was_blocking = os.get_blocking(self.fd)
        os.set_blocking(self.fd, False)

    def detach(self) -> None:
        self.flush(block=True)
        if self._loop is not None:
            if self._writer_armed:
                self._loop.remove_writer(self.fd)
            os.set_blocking(self.fd, self._was_blocking)
            self._loop = None

    def child_lines(self, service: str, stream: str, pid: int, chunk: bytes) -> None:
        """One chunk of whole lines from one pipe. The timestamp and the fixed part of each
        JSON object are built once per chunk: this is the log pump's hot path."""
        body = chunk[:-1] if chunk.endswith(b"\n") else chunk
        if self.pretty:
            colour = self._colours.setdefault(service, COLOURS[len(self._colours) % len(COLOURS)])
            self._width = max(self._width, len(service))
            prefix = f"\x1b[{colour}m{service:<{self._width}} |\x1b[0m ".encode()
            lines = [prefix + line + b"\n" for line in body.split(b"\n")]
        else:
            prefix = (f'{{"ts": "{_timestamp()}", "service": {json.dumps(service)}, '
                      f'"stream": "{stream}", "pid": {pid}, "message": ').encode()
            if body.isascii() and len(body.translate(None, _JSON_ESCAPED)) == len(body):
                # Nothing to escape (the common case): the lines are their own JSON strings.
                lines = [prefix + b'"' + line + b'"}\n' for line in body.split(b"\n")]
            else:
                encode = _encode_string
                # split on b"\n" only: a "\r" or a form feed inside a line stays in its message.
                lines = [prefix + encode(line.decode("utf-8", "replace")).encode() + b"}\n"
                         for line in body.split(b"\n")]
        data = b"".join(lines)
        if self._pending_bytes + len(data) <= self.limit:
            self.write(data, service)
            return
        for line in lines:  # near the limit: keep what fits, drop (and count) line by line
            self.write(line, service)

    def write(self, data: bytes, source: str = "coditect-start") -> None:
        if self._pending_bytes + len(data) > self.limit:
            self.dropped[source] = self.dropped.get(source, 0) + 1
            if self.on_drop is not None:
                self.on_drop(source, 1)
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if not self._writer_armed:
            self.flush()

    def flush(self, block: bool = False) -> None:
        deadline = time.monotonic() + 2.0
        while self._pending:
            chunk = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending.clear()
            try:
                written = os.write(self.fd, chunk)
            except BlockingIOError:
                written = 0
            except OSError:
                # EPIPE (nobody reads our stdout), EIO (a hung-up TTY), ENOSPC: what was
                # pending is lost; count it and carry on, the log files still have every line.
                self.dropped["stdout"] = self.dropped.get("stdout", 0) + 1
                self._pending_bytes = 0
                self._disarm()
                return
            rest = chunk[written:]
            self._pending_bytes = len(rest)
            if rest:
                self._pending.append(rest)
                if block and time.monotonic() < deadline:
                    continue
                self._arm()
                return
        self._disarm()

    def _arm(self) -> None:
        if self._loop is not None and not self._writer_armed:
            self._loop.add_writer(self.fd, self.flush)
            self._writer_armed = True

    def _disarm(self) -> None:
        if self._loop is not None and self._writer_armed:
            self._loop.remove_writer(self.fd)
            self._writer_armed = False


class StructlogSink:
    """A file-like object structlog's WriteLogger writes to; lands in the Console."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def write(self, text: str) -> None:
        self.console.write(text.encode())

    def flush(self) -> None:
        pass


class ServiceLog:
    """$CODITECT_HOME/logs/<service>.log, rotated by supervisord's own handler.

    A log that cannot be opened or written (a full or read-only volume, a file of another
    user) never stops the service: the lines still reach the console, and `on_error` hears of
    it once a minute at most instead of a traceback per chunk."""

    ERROR_EVERY = 60.0  # seconds between two reports of a log that keeps failing

    def __init__(self, path: Path, maxbytes: int, backups: int,
                 on_error: Callable[[str], None]) -> None:
        from supervisor.loggers import LogRecord, RotatingFileHandler

        self._record = LogRecord
        self._on_error = on_error
        self._reported_at = -self.ERROR_EVERY
        self.failures = 0
        self.handler: Any = None
        try:
            self.handler = RotatingFileHandler(str(path), "ab", maxbytes, backups)
        except OSError as error:
            self._failed(f"cannot open {path}: {error.strerror or error}")
            return
        # supervisor's handler prints a traceback on any error; we count and report instead.
        self.handler.handleError = lambda: self._failed(
            f"cannot write {path}: {sys.exc_info()[1]}")

    def _failed(self, message: str) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._reported_at >= self.ERROR_EVERY:
            self._reported_at = now
            self._on_error(message)

    def write(self, data: bytes) -> None:
        if self.handler is None:
            self.failures += 1
            return
        self.handler.emit(self._record(20, data))

    def close(self) -> None:
        if self.handler is not None:
            self.handler.close()


class Pump:
    """Reads one pipe with add_reader; whole lines go to the file and the console."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        *,
        service: str,
        stream: str,
        pid: int,
        log: ServiceLog,
        console: Console,
    ) -> None:
        self.loop = loop
        self.fd = fd
        self.service = service
        self.stream = stream
        self.pid = pid
        self.log = log
        self.console = console
        self.partial = b""
        self.closed = loop.create_future()
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._finish()
            return
        buffer = self.partial + data
        end = buffer.rfind(b"\n") + 1
        if end == 0 and len(buffer) < MAX_PARTIAL_LINE:
            self.partial = buffer
            return
        if end == 0:
            end = len(buffer)
        complete, self.partial = buffer[:end], buffer[end:]
        self._emit(complete)

    def _emit(self, complete: bytes) -> None:
        self.log.write(complete)
        self.console.child_lines(self.service, self.stream, self.pid, complete)

    def _finish(self) -> None:
        self.loop.remove_reader(self.fd)
        if self.partial:
            self._emit(self.partial + b"\n")
            self.partial = b""
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        """Stop reading now (drain deadline); what was read is already written."""
        if not self.closed.done():
            self._finish()


def stderr_line(message: str) -> None:
    """Before the loop runs (usage and catalogue errors): plain text to stderr."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
