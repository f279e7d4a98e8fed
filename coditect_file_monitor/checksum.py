"""Size and streamed sha256 of one path, in bounded memory, never raising for the file's sake.

The file is opened with O_NOFOLLOW (a symlink is reported, not followed: no loops, no hashing
of /dev/zero through a link) and O_NONBLOCK (a FIFO never blocks the worker); only regular
files are read. `hashlib.file_digest` reads through one fixed buffer, so a 10 GiB file costs
the same memory as a 10 byte one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass

VANISHED = "vanished"
PERMISSION_DENIED = "permission denied"
SYMLINK = "symlink, not followed"
NOT_REGULAR = "not a regular file"

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Measure:
    size: int | None
    sha256: str | None = None
    error: str | None = None


def size_of(path: str) -> Measure:
    """lstat size only; `None` when the path is gone."""
    try:
        return Measure(os.lstat(path).st_size)
    except OSError as exc:
        return Measure(None, error=_reason(exc))


def sha256_of(path: str) -> Measure:
    """Size and sha256 of the regular file at `path` as read now."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            # O_NOFOLLOW on a symlink: report the link itself.
            link = size_of(path)
            return Measure(link.size, error=SYMLINK if link.error is None else link.error)
        return Measure(None, error=_reason(exc))
    try:
        with os.fdopen(fd, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return Measure(None, error=NOT_REGULAR)
            digest = hashlib.file_digest(f, "sha256")
            return Measure(st.st_size, sha256=digest.hexdigest())
    except OSError as exc:
        return Measure(None, error=_reason(exc))


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return VANISHED
    if isinstance(exc, PermissionError):
        return PERMISSION_DENIED
    return exc.strerror or type(exc).__name__
