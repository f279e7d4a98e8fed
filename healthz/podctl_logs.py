"""`podctl logs`: the end of a service's log file, and following it across rotation.

The engine writes every line of a child to `$CODITECT_HOME/logs/<name>.log` and rotates it to
`<name>.log.1`, … (supervisord's `stdout_logfile_maxbytes` / `_backups`). Reading the file
needs no pod: it works while the pod is down, and after it. Bytes are passed through as they
are (a child may write anything), so output goes to a binary stream.
"""

from __future__ import annotations

import os
import threading

from healthz.podctl_errors import FAILED, PodctlError, check_name

TYPE_CHECKING = False  # spares the `typing` import at run time; mypy treats it as True
if TYPE_CHECKING:
    from typing import BinaryIO

DEFAULT_HOME = "/app/.coditect"
_BLOCK = 64 * 1024


def log_path(home: str, name: str) -> str:
    """Where the engine keeps a service's log; `name` is checked, so no `/` ever reaches it."""
    return os.path.join(home, "logs", check_name(name) + ".log")


def open_log(path: str) -> BinaryIO:
    try:
        return open(path, "rb", buffering=0)
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
            with open(path + ".1", "rb", buffering=0) as older:
                before, _ = last_lines(older, os.fstat(older.fileno()).st_size, count - found)
        except OSError:
            before = b""
        if before and not before.endswith(b"\n"):
            before += b"\n"
        data = before + data
    return data


class Follower:
    """`tail -F` for one log file: the same path, whatever file it names from one moment to
    the next.

    After each quiet read it compares the file it holds with the one at `path`: a different
    file (dev, inode) means a rotation, so the rest of the old file is read before the new
    one is opened from its start; a file shorter than the offset was truncated in place, so
    reading starts over. There is no portable change notification in the standard library,
    so a quiet file is polled every `interval` seconds; `stop` ends the loop.
    """

    def __init__(
        self,
        path: str,
        log: BinaryIO,
        out: BinaryIO,
        *,
        interval: float = 0.2,
        stop: threading.Event | None = None,
    ) -> None:
        self.path = path
        self.log = log
        self.out = out
        self.interval = interval
        self.stop = stop or threading.Event()

    def run(self) -> None:
        ident = _identity(os.fstat(self.log.fileno()))
        while not self.stop.is_set():
            if self._pass_on():
                continue
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None  # renamed away; the new file is not there yet
            if current is not None and _identity(current) != ident:
                self._pass_on(until_end=True)
                try:
                    fresh = open(self.path, "rb", buffering=0)  # noqa: SIM115 - kept open
                except FileNotFoundError:
                    continue
                self.log.close()
                self.log = fresh
                ident = _identity(os.fstat(fresh.fileno()))
                continue
            if os.fstat(self.log.fileno()).st_size < self.log.tell():
                self.log.seek(0)  # truncated in place (copytruncate)
                continue
            self.stop.wait(self.interval)

    def close(self) -> None:
        self.log.close()

    def _pass_on(self, until_end: bool = False) -> bool:
        """Copy what the held file has past the offset; whether there was anything."""
        moved = False
        while True:
            chunk = self.log.read(_BLOCK)
            if not chunk:
                return moved
            self.out.write(chunk)
            self.out.flush()
            moved = True
            if not until_end:
                return moved


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino
