"""Atomic creation of files and directories, relative to a directory file descriptor.

A new entry is built under a temporary name in its final directory (so the rename cannot
cross filesystems), made durable with fsync, and only then given its real name. A kill at any
moment leaves the old entry or the new one, never a torn one; what may remain is a temporary
entry, which `remove_leftovers` clears on the next run. Nothing here follows a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass

TEMP_PREFIX = ".coditect-tmp-"
_NAME_ROOM = 200  # NAME_MAX is 255; leave room for the prefix and the random part
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# link() is unsupported on some filesystems (FUSE, some network mounts): fall back to rename.
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


@dataclass(frozen=True, slots=True)
class Owner:
    """Numeric owner to give new entries."""

    uid: int
    gid: int


def temp_name(name: str) -> str:
    # os.urandom rather than `secrets`: the same bytes, without importing hmac and random
    # (~5 ms) on the boot's path before the first fork.
    return f"{TEMP_PREFIX}{os.urandom(4).hex()}-{name[:_NAME_ROOM]}"


def open_dir(dir_fd: int, name: str) -> int:
    """Open a subdirectory; a symlink in its place fails with ELOOP instead of being followed."""
    return os.open(name, _OPEN_DIR, dir_fd=dir_fd)


def _write_temp(dir_fd: int, name: str, chunks: Iterable[bytes], mode: int,
                owner: Owner | None) -> str:
    tmp = temp_name(name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            if owner is not None:
                os.fchown(fd, owner.uid, owner.gid)
            # After chown (which clears set-id bits), and explicit so the umask cannot strip
            # a script's executable bit.
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _discard(dir_fd, tmp)
        raise
    return tmp


def write_new(dir_fd: int, name: str, chunks: Iterable[bytes], *, mode: int,
              owner: Owner | None = None) -> bool:
    """Create `name` with the given content; False (and nothing written) if it exists by the
    time the content is ready, because an existing file is never overwritten."""
    tmp = _write_temp(dir_fd, name, chunks, mode, owner)
    try:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        _discard(dir_fd, tmp)
        return False
    except OSError as err:
        if err.errno not in _NO_LINK:
            _discard(dir_fd, tmp)
            raise
        _rename(dir_fd, tmp, name)
    else:
        _discard(dir_fd, tmp)
    os.fsync(dir_fd)
    return True


def replace(dir_fd: int, name: str, chunks: Iterable[bytes], *, mode: int,
            owner: Owner | None = None) -> None:
    """Replace `name` (or create it) with the given content in one rename."""
    tmp = _write_temp(dir_fd, name, chunks, mode, owner)
    _rename(dir_fd, tmp, name)
    os.fsync(dir_fd)


def make_dir(dir_fd: int, name: str, *, mode: int, owner: Owner | None = None) -> bool:
    """Create directory `name` with its final owner and mode already set, so a kill cannot
    leave a root-owned directory the user could never write into; False if it exists."""
    if _exists(dir_fd, name):
        return False
    tmp = temp_name(name)
    os.mkdir(tmp, 0o700, dir_fd=dir_fd)
    try:
        fd = open_dir(dir_fd, tmp)
        try:
            if owner is not None:
                os.fchown(fd, owner.uid, owner.gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        # Should one appear since the check above, rename() replaces it only if it is empty
        # (no loss) and refuses a non-empty one, which then is someone else's and is kept.
        try:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            os.rmdir(tmp, dir_fd=dir_fd)
            return False
    except BaseException:
        _discard(dir_fd, tmp)
        raise
    os.fsync(dir_fd)
    return True


def leftovers(dir_fd: int) -> list[str]:
    """Names of temporary entries an interrupted run left in this directory."""
    with os.scandir(dir_fd) as entries:
        return sorted(e.name for e in entries if e.name.startswith(TEMP_PREFIX))


def remove_leftover(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except IsADirectoryError:
        os.rmdir(name, dir_fd=dir_fd)


def _rename(dir_fd: int, tmp: str, name: str) -> None:
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _discard(dir_fd, tmp)
        raise


def _discard(dir_fd: int, tmp: str) -> None:
    with contextlib.suppress(OSError):  # best effort: the next run removes what is left
        remove_leftover(dir_fd, tmp)


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
