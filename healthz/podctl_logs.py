"""`podctl logs`: the end of a service's log file, and following it across rotation.

The engine writes every line of a child to `$CODITECT_HOME/logs/<name>.log` and rotates it to
`<name>.log.1`, … (supervisord's `stdout_logfile_maxbytes` / `_backups`). Reading the file
needs no pod: it works while the pod is down, and after it. Bytes are passed through as they
are (a child may write anything), so output goes to a binary stream.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading

from healthz.podctl_errors import FAILED, PodctlError, check_name

TYPE_CHECKING = False  # spares the `typing` import at run time; mypy treats it as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO, Protocol

    class Output(Protocol):
        """Where followed bytes go: a binary stream, or one that escapes control codes."""

        def write(self, data: bytes, /) -> int: ...

        def flush(self) -> None: ...

DEFAULT_HOME = "/app/.coditect"
_BLOCK = 64 * 1024


def log_path(home: str, name: str) -> str:
    """Where the engine keeps a service's log; `name` is checked, so no `/` ever reaches it."""
    return os.path.join(home, "logs", check_name(name) + ".log")


def open_log(path: str) -> BinaryIO:
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise PodctlError(
            FAILED,
            f"no log at {path} (a service of this pod? --home or CODITECT_HOME name another)",
        ) from None
    except OSError as exc:
        raise PodctlError(FAILED, f"cannot read {path}: {exc.strerror or exc}") from None


def last_lines(log: BinaryIO, end: int, count: int) -> tuple[bytes, int]:
    """The last `count` lines before offset `end` and how many there were (an unterminated
    last line counts as one), read backwards block by block."""
    if count <= 0 or end <= 0:
        return b"", 0
    buf = b""
    pos = end
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        log.seek(pos)
        buf = log.read(step) + buf
        trail = 1 if buf.endswith(b"\n") else 0
        if buf.count(b"\n", 0, len(buf) - trail) >= count:
            break
    trail = 1 if buf.endswith(b"\n") else 0
    # Enough newlines were seen (or the start reached), so the last `count` pieces are whole
    # lines even when the first piece of `buf` is the tail of a longer one.
    lines = buf[: len(buf) - trail].split(b"\n")[-count:]
    return b"\n".join(lines) + (b"\n" if trail else b""), len(lines)


def tail(path: str, log: BinaryIO, end: int, count: int) -> bytes:
    """The last `count` lines of the log, reaching into `<path>.1` when the current file,
    freshly rotated, holds fewer."""
    data, found = last_lines(log, end, count)
    if found < count:
        try:
            with open_regular(path + ".1") as older:
                before, _ = last_lines(older, os.fstat(older.fileno()).st_size, count - found)
        except OSError:
            before = b""
        if before and not before.endswith(b"\n"):
            before += b"\n"
        data = before + data
    log.seek(end)  # following goes on from here, whatever was read backwards
    return data


class Follower:
    """`tail -F` for one log file that loses nothing across rotation.

    The file it holds is read to its end before any other; when the path names another file
    (the engine rotated: `<name>.log` → `.1` → `.2` …), the next file read is the one that came
    right after the held one, wherever rotation has moved it by then: the name one below the
    held file's current one (`.3` after `.4`, the log itself after `.1`). So however many
    rotations happen between two looks, every file is read once, in order, as long as it has
    not been rotated past `_backups` before it is reached. A file shorter than the offset was
    truncated in place, so reading starts over.

    `look` is one step and never waits, so that the same follower serves `podctl logs -f` on a
    file (`run`, a loop in this process) and the pod's `GET /v1/logs/NAME?follow=1` (awaited
    between looks on the engine's event loop). There is no portable change notification in the
    standard library, so a quiet file is looked at again every `interval` seconds.
    """

    # A rename in progress is seen at most for a moment: look again this soon.
    RACE_RETRY = 0.005
    # Rotated names looked at past the last one found: rotation leaves at most one gap.
    GAP = 2

    def __init__(
        self,
        path: str,
        log: BinaryIO,
        out: Output | None = None,
        *,
        interval: float = 0.2,
        stop: threading.Event | None = None,
        on_gap: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.log = log
        self.out = out
        self.interval = interval
        self.stop = stop or threading.Event()
        self.on_gap = on_gap or _say_on_stderr
        self.ident = _identity(os.fstat(log.fileno()))

    def run(self) -> None:
        """Copy to `out` until `stop` is set."""
        assert self.out is not None
        while not self.stop.is_set():
            data, pause = self.look()
            if data:
                self.out.write(data)
                self.out.flush()
            if pause:
                self.stop.wait(pause)

    def look(self) -> tuple[bytes, float]:
        """What is new (at most one block), and how long to wait before the next look (0: at
        once, there may be more)."""
        chunk = self.log.read(_BLOCK)
        if chunk:
            return chunk, 0.0
        current = _stat(self.path)
        if current is not None and _identity(current) != self.ident:
            # Rotated: what was written to the held file between the read above and the
            # rename is still to be passed on before its successor.
            chunk = self.log.read(_BLOCK)
            if chunk:
                return chunk, 0.0
            fresh = self._successor(self.ident)
            if fresh is None:  # a rotation is half done; look again in a moment
                return b"", self.RACE_RETRY
            self.log.close()
            self.log = fresh
            self.ident = _identity(os.fstat(fresh.fileno()))
            return b"", 0.0
        if os.fstat(self.log.fileno()).st_size < self.log.tell():
            self.log.seek(0)  # truncated in place (copytruncate)
            return b"", 0.0
        return b"", self.interval

    def close(self) -> None:
        self.log.close()

    def _name(self, index: int) -> str:
        return self.path if index == 0 else f"{self.path}.{index}"

    def _index_of(self, ident: tuple[int, int]) -> tuple[int | None, int]:
        """Where the file `ident` is now (None: rotated away) and the oldest index seen."""
        index, oldest, missing = 0, 0, 0
        while missing <= self.GAP:
            st = _stat(self._name(index))
            if st is None:
                missing += 1
            else:
                missing, oldest = 0, index
                if _identity(st) == ident:
                    return index, oldest
            index += 1
        return None, oldest

    def _successor(self, ident: tuple[int, int]) -> BinaryIO | None:
        """The file written right after `ident`, open; None when that cannot be known at this
        instant (a rename in progress). A file only ever moves to a higher index, so if `ident`
        is at index i both before and after opening i - 1, what was opened is its successor."""
        index, oldest = self._index_of(ident)
        if index is None:
            # Rotated away before we were done with its successors: the oldest file left is the
            # nearest we can get; say so rather than pretend nothing was lost.
            self.on_gap(f"{self.path}: rotated past its backups before it was read to the "
                        "end; lines may be missing")
            return _open_or_none(self._name(oldest))
        if index == 0:
            return None
        fresh = _open_or_none(self._name(index - 1))
        if fresh is None:
            return None
        after = _stat(self._name(index))
        if after is None or _identity(after) != ident:
            fresh.close()
            return None
        return fresh


def _say_on_stderr(message: str) -> None:
    sys.stderr.write(f"podctl: {message}\n")
    sys.stderr.flush()


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _open_or_none(path: str) -> BinaryIO | None:
    try:
        return open_regular(path)
    except FileNotFoundError:
        return None


def open_regular(path: str) -> BinaryIO:
    """Open for reading without following a symlink or blocking on a FIFO (the engine never
    leaves either at a log's name); anything but a regular file is an OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return os.fdopen(fd, "rb", buffering=0)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino
