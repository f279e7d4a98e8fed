"""Log pumps: every byte a child writes goes to its log file (lossless, rotated) and, one JSON
object a line, to the container's stdout (bounded: a blocked stdout drops, never blocks).

The rotating file rotates as supervisord's handler does (`stdout_logfile_maxbytes` /
`_backups`), but every open and rename is relative to the logs directory's descriptor and
refuses what is not a regular file (`coditect_init.homefs`). It gets whole lines only, so a
line never straddles two files. The JSON copy is built a chunk at a time
(`start.logs_json`): the pump's cost is per read, not per line.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from coditect_init import homefs
from healthz.controls import escape_controls
from start.logs_json import Heads, encode

# Bytes per read. 256 KiB reads measured no faster here and 1 MiB ones about 3x slower (fresh
# large buffers each read); at 64 KiB the per-read cost is small beside the per-byte one.
CHUNK = 1 << 16
MAX_PARTIAL_LINE = 1 << 16  # a "line" longer than this is written in pieces
CONSOLE_BUFFER_BYTES = 4 << 20
IOV_MAX = 1024  # buffers one writev(2) takes (Linux)
CATCH_UP_READS = 16  # 1 MiB, a full pipe (start.process asks for that size)

COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")

Buffer = bytes | memoryview


class Slot:
    """A place kept in the console's queue for a line written later (an engine event held
    until structlog is loaded): what was queued after it waits until it is filled, so that
    stdout keeps the order in which things happened."""

    __slots__ = ()


class Console:
    """The container's stdout. Writes never block: past CONSOLE_BUFFER_BYTES lines are dropped
    and counted, so a stalled log collector cannot stall a child or the engine."""

    def __init__(self, fd: int = 1, *, fmt: str = "auto", limit: int = CONSOLE_BUFFER_BYTES):
        self.fd = fd
        self.limit = limit
        self.pretty = fmt == "console" or (fmt == "auto" and os.isatty(fd))
        self.dropped: dict[str, int] = {}
        self.on_drop: Callable[[str, int], None] | None = None
        self.on_output: Callable[[int], None] | None = None  # bytes of children's output
        self._pending: deque[Buffer | Slot] = deque()
        self._pending_bytes = 0
        self._slots = 0  # kept places not filled yet: nothing after the first is written
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer_armed = False
        self._colours: dict[str, str] = {}
        self._width = 8
        self._heads = Heads()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._was_blocking = os.get_blocking(self.fd)
        os.set_blocking(self.fd, False)

    def detach(self) -> None:
        if self._slots:  # events never written (the engine failed before structlog came)
            self._pending = deque(b for b in self._pending if not isinstance(b, Slot))
            self._slots = 0
        self.flush(block=True)
        if self._loop is not None:
            if self._writer_armed:
                self._loop.remove_writer(self.fd)
            os.set_blocking(self.fd, self._was_blocking)
            self._loop = None

    def child_lines(self, service: str, stream: str, pid: int, chunk: bytes) -> None:
        """One chunk of whole lines from one pipe (or one piece of an over-long line): the log
        pump's hot path, so every step is one C-level operation over the whole chunk."""
        if self.on_output is not None:
            self.on_output(len(chunk))
        room = self.limit - self._pending_bytes
        if room <= 0:  # stdout is stalled: nothing of this chunk would fit, spare encoding it
            self._drop(service, chunk.count(b"\n") or 1)
            return
        if self.pretty:
            head = self._prefix(service)
            body = escape_controls(chunk)  # for a person's eyes: no child's control code runs
            if not body.endswith(b"\n"):
                body += b"\n"
            lines = body.replace(b"\n", b"\n" + head)
            length = len(lines) - len(head)
        else:
            head = self._heads(service, stream, pid)
            lines, length = encode(head, chunk)
        if len(head) + length > room:  # keep the lines that fit, drop (and count) the rest
            kept = lines.rfind(b"\n", 0, max(0, room - len(head))) + 1
            self._drop(service, lines.count(b"\n", kept, length))
            length = kept
        if length:
            self._pending.append(head)
            self._pending.append(memoryview(lines)[:length])
            self._pending_bytes += len(head) + length
            if not self._writer_armed:
                self.flush()

    def _prefix(self, service: str) -> bytes:
        colour = self._colours.setdefault(service, COLOURS[len(self._colours) % len(COLOURS)])
        self._width = max(self._width, len(service))
        return f"\x1b[{colour}m{service:<{self._width}} |\x1b[0m ".encode()

    def _drop(self, source: str, lines: int) -> None:
        self.dropped[source] = self.dropped.get(source, 0) + lines
        if self.on_drop is not None:
            self.on_drop(source, lines)

    def write(self, data: bytes, source: str = "coditect-start") -> None:
        if self._pending_bytes + len(data) > self.limit:
            self._drop(source, 1)
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if not self._writer_armed:
            self.flush()

    def reserve(self) -> Slot:
        """Keep this place in the queue for a line that `fill` gives later."""
        slot = Slot()
        self._pending.append(slot)
        self._slots += 1
        return slot

    def fill(self, slot: Slot, data: bytes) -> None:
        """The line for a kept place; never dropped (a few events, once, at boot)."""
        pending = self._pending
        if slot not in pending:  # stdout failed meanwhile and the queue was given up
            self.write(data)
            return
        pending[pending.index(slot)] = data
        self._pending_bytes += len(data)
        self._slots -= 1
        if not self._writer_armed:
            self.flush()

    def _offered(self) -> list[Buffer]:
        """What one writev may take: the head of the queue, up to the first unfilled place."""
        if not self._slots:
            return list(itertools.islice(self._pending, IOV_MAX))  # type: ignore[arg-type]
        offered: list[Buffer] = []
        for item in itertools.islice(self._pending, IOV_MAX):
            if isinstance(item, Slot):
                break
            offered.append(item)
        return offered

    def flush(self, block: bool = False) -> None:
        deadline = time.monotonic() + 2.0
        pending = self._pending
        while pending:
            offered = self._offered()
            if not offered:  # an unfilled place comes first: `fill` flushes again
                self._disarm()
                return
            try:
                # One syscall for all that waits, without joining it into one more copy.
                written = os.writev(self.fd, offered)
            except BlockingIOError:
                written = 0
            except OSError:
                # EPIPE (nobody reads our stdout), EIO (a hung-up TTY), ENOSPC: what was
                # pending is lost; count it and carry on, the log files still have every line.
                # Counted in lines through _drop, so /metrics shows it as it does a stall.
                self._drop("stdout", sum(bytes(chunk).count(b"\n") for chunk in pending
                                         if not isinstance(chunk, Slot)) or 1)
                pending.clear()
                self._pending_bytes = 0
                self._slots = 0
                self._disarm()
                return
            short = written < sum(map(len, offered))
            self._pending_bytes -= written
            for item in offered:  # what was written leaves the queue; a Slot never was offered
                if written < len(item):
                    if written:
                        pending[0] = memoryview(item)[written:]
                    break
                written -= len(item)
                pending.popleft()
            if short:
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
    """A file-like object structlog's WriteLogger writes to; lands in the Console, in the
    places kept for them first (`slots`: the held events, one line each, in order)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.slots: deque[Slot] = deque()

    def write(self, text: str) -> None:
        if self.slots:
            self.console.fill(self.slots.popleft(), text.encode())
        else:
            self.console.write(text.encode())

    def flush(self) -> None:
        pass


class ServiceLog:
    """$CODITECT_HOME/logs/<service>.log, rotated as supervisord rotates it
    (`stdout_logfile_maxbytes` / `_backups`: `<name>.log.1` is the newest older copy).

    The file is opened through `coditect_init.homefs`: the logs directory is walked from the
    home without following a symlink and kept open, so every open, rename and rotation is
    relative to it; a FIFO, device, directory or symlink at the log's name is set aside
    (`<name>.log.invalid-<time>`, reported once) and a fresh file started. Files are created
    0640 and the directory made 0750: a service's output is its owner's.

    A log that cannot be opened or written (a full or read-only volume, a file of another
    user) never stops the service: the lines still reach the console, and `on_error` hears of
    it once a minute at most instead of a traceback per chunk."""

    ERROR_EVERY = 60.0  # seconds between two reports of a log that keeps failing

    def __init__(self, path: Path, maxbytes: int, backups: int,
                 on_error: Callable[[str], None]) -> None:
        self.path = path
        self.name = path.name
        self.maxbytes = maxbytes
        self.backups = backups
        self._on_error = on_error
        self._reported_at = -self.ERROR_EVERY
        self.failures = 0
        self.fd: int | None = None
        self._dir_fd: int | None = None
        self._size = 0
        self._retry_at = 0.0
        try:
            # The logs directory lies in the home (its parent); a symlink may lead elsewhere
            # inside it, never out.
            self._dir_fd = homefs.open_dir_inside(path.parent.parent, path.parent)
            homefs.make_private(self._dir_fd, homefs.PRIVATE_DIR)
            self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except OSError as error:
            self._failed(f"cannot open {path}: {error.strerror or error}")

    def _open(self, flags: int) -> None:
        assert self._dir_fd is not None
        try:
            fd = homefs.open_regular(self._dir_fd, self.name, flags)
        except homefs.NotRegular as wrong:
            aside = homefs.set_aside(self._dir_fd, self.name)
            # Reported at once, whatever the rate limit: it happens once per file.
            self._on_error(f"{self.path} was {wrong.kind}; moved to {self.path.parent / aside}"
                           " and a new log file started")
            fd = homefs.open_regular(self._dir_fd, self.name, flags | os.O_EXCL)
        homefs.make_private(fd, homefs.PRIVATE_FILE)
        self.fd = fd
        self._size = os.fstat(fd).st_size

    def _failed(self, message: str) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._reported_at >= self.ERROR_EVERY:
            self._reported_at = now
            self._on_error(message)

    def write(self, data: bytes) -> None:
        """Whole lines (or a piece of an over-long one), rolled over past maxbytes; a large
        write is cut after the line that reaches maxbytes, so a file runs past maxbytes by one
        line at most, however much one read brought."""
        if self.fd is None and not self._reopened():
            self.failures += 1
            return
        assert self.fd is not None
        maxbytes = self.maxbytes
        start = 0
        try:
            while start < len(data):
                end = len(data)
                if 0 < maxbytes < self._size + end - start:
                    end = data.find(b"\n", start + max(maxbytes - self._size, 1) - 1) + 1 or end
                view = memoryview(data)[start:end]
                while view:
                    view = view[os.write(self.fd, view):]
                self._size += end - start
                start = end
                if 0 < maxbytes <= self._size:
                    self._rollover()
        except OSError as error:
            self._failed(f"cannot write {self.path}: {error.strerror or error}")

    def _reopened(self) -> bool:
        """After a failed open or rotation (a full volume), try again once a minute: a volume
        that has room again gets its log back without a restart."""
        now = time.monotonic()
        if self._dir_fd is None or now < self._retry_at:
            return False
        self._retry_at = now + self.ERROR_EVERY
        try:
            self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except OSError as error:
            self._failed(f"cannot open {self.path}: {error.strerror or error}")
            return False
        return True

    def _rollover(self) -> None:
        """supervisord's doRollover, relative to the directory's descriptor: `.N-1` → `.N` …
        `.1` → `.2`, the log → `.1`, a new log (renames replace, never follow, a symlink)."""
        assert self.fd is not None and self._dir_fd is not None
        os.close(self.fd)
        self.fd = None
        if self.backups <= 0:
            self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC)
            return
        for i in range(self.backups - 1, 0, -1):
            self._rename(f"{self.name}.{i}", f"{self.name}.{i + 1}")
        self._rename(self.name, f"{self.name}.1")
        self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def _rename(self, old: str, new: str) -> None:
        try:
            os.rename(old, new, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        except OSError as error:  # e.g. a directory at `new`: that copy is skipped, not fatal
            self._failed(f"cannot rotate {self.path.parent / old}: {error.strerror or error}")

    def close(self) -> None:
        for fd in (self.fd, self._dir_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self._dir_fd = None


class Pump:
    """Reads one pipe with add_reader; whole lines go to the file and the console.

    A child that streams output (a short read less than GATHER after the previous one) is left
    to write for GATHER before the next read: one read then takes what would have cost hundreds
    of wake-ups and syscalls a line at a time. Its pipe (1 MiB) holds far more than a GATHER's
    worth, so the child does not block on it; a child that writes now and then is read at once,
    and a full read is followed by the next one at once."""

    GATHER = 0.001

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
        self._last_read = -1.0
        self._gathering: asyncio.TimerHandle | None = None
        loop.add_reader(fd, self._readable)

    def _read(self) -> bytes | None:
        """One read of the pipe: its bytes, or None when it is empty for now. At its end (or a
        read error) the pump is finished and None returned too."""
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self._finish()
            return None
        return data

    def _readable(self) -> None:
        data = self._read()
        if data is None:
            return
        now = self.loop.time()
        if len(data) < CHUNK and now - self._last_read < self.GATHER:
            self.loop.remove_reader(self.fd)
            self._gathering = self.loop.call_at(now + self.GATHER, self._gathered)
        self._last_read = now
        self._take(data)

    def catch_up(self, reads: int = CATCH_UP_READS) -> None:
        """Read what the pipe holds now, at once: its writer exited, and the lines it wrote
        before come before the engine's `exited` on stdout. Bounded: a grandchild that keeps
        the pipe open and writes on is read as usual."""
        for _ in range(reads):
            if self.closed.done() or (data := self._read()) is None:
                return
            self._take(data)

    def _take(self, data: bytes) -> None:
        buffer = self.partial + data
        end = buffer.rfind(b"\n") + 1
        if end == 0 and len(buffer) < MAX_PARTIAL_LINE:
            self.partial = buffer
            return
        if end == 0:
            end = len(buffer)
        complete, self.partial = buffer[:end], buffer[end:]
        self._emit(complete)

    def _gathered(self) -> None:
        self._gathering = None
        # What the next read brings counts as right after this one: a child still streaming is
        # read once a GATHER, not twice (the gathered output, then its next line at once).
        self._last_read = self.loop.time()
        self.loop.add_reader(self.fd, self._readable)

    def _emit(self, complete: bytes) -> None:
        self.log.write(complete)
        self.console.child_lines(self.service, self.stream, self.pid, complete)

    def _finish(self) -> None:
        self.loop.remove_reader(self.fd)
        if self._gathering is not None:
            self._gathering.cancel()
            self._gathering = None
        if self.partial:
            self._emit(self.partial + b"\n")
            self.partial = b""
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        """Stop reading now (drain deadline); what was read is already written."""
        if not self.closed.done():
            self._finish()
