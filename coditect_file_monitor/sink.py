"""Where event lines go: stdout, or the events log rotated by size.

Why not `logging.handlers.RotatingFileHandler`: it reports write errors through
`handleError` (a traceback on stderr, nothing we can count), it truncates the file when
`backupCount` is 0, and it flushes every record. Here a line is only ever written whole into
the current file, rotation happens between two lines (so every event is in exactly one file),
writes are flushed once per batch, and a failed write is counted and the file reopened (a
deleted log directory comes back) instead of being lost for good.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import BinaryIO, Protocol

from coditect_init import homefs


class Sink(Protocol):
    def write(self, line: str) -> None:
        """Write one line (without its newline); may raise OSError."""

    def flush(self) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    """Lines to a text stream (stdout)."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer

    def write(self, line: str) -> None:
        self._stream.write(line.encode() + b"\n")

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self.flush()


class RotatingFileSink:
    """Append lines to `path`; before a line would take it past `max_bytes`, rename
    `path` → `path.1` → … → `path.<backups>` (the oldest is removed) and start a new file.

    `max_bytes` 0 never rotates. A line longer than `max_bytes` still goes whole into a
    file of its own.
    """

    def __init__(self, path: str, *, max_bytes: int, backups: int) -> None:
        if max_bytes and backups < 1:
            raise ValueError("rotation needs at least one backup, or events would be lost")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: BinaryIO | None = None
        self._size = 0

    def open(self) -> None:
        """Open now, so that an unusable path fails at start-up rather than at the first event."""
        self._open()

    def write(self, line: str) -> None:
        data = line.encode() + b"\n"
        f = self._open()
        if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
            f = self._open()
        try:
            f.write(data)
        except OSError:
            self._drop_file()
            raise
        self._size += len(data)

    def flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError:
            self._drop_file()
            raise

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._drop_file()

    def _open(self) -> BinaryIO:
        if self._file is None:
            self._file = os.fdopen(self._open_fd(), "ab")
            self._size = os.fstat(self._file.fileno()).st_size
        return self._file

    def _open_fd(self) -> int:
        """The log, opened without following a symlink or blocking on a FIFO (it lives on the
        user's volume); what is not a regular file there is set aside for a fresh one."""
        directory, name = os.path.split(self.path)
        os.makedirs(directory or ".", exist_ok=True)
        dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                return homefs.open_regular(dir_fd, name, homefs.APPEND)
            except homefs.NotRegular as wrong:
                aside = homefs.set_aside(dir_fd, name)
                print(f"coditect-file-monitor: {self.path} was {wrong.kind}; moved to "
                      f"{aside}, a new log started", file=sys.stderr, flush=True)
                return homefs.open_regular(dir_fd, name, homefs.APPEND | os.O_EXCL)
        finally:
            os.close(dir_fd)

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.flush()
        self._drop_file()
        for n in range(self.backups - 1, 0, -1):
            older = f"{self.path}.{n}"
            if os.path.lexists(older):  # a symlink is renamed, never followed
                os.replace(older, f"{self.path}.{n + 1}")
        os.replace(self.path, f"{self.path}.1")

    def _drop_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
