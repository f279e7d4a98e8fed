"""Opening files inside the home so that nothing there can hang, crash or redirect us.

The home is on a volume its user (or a corrupted disk) may fill with anything: a symlink to
`/etc/passwd`, a FIFO that blocks `open()` for good, a device. Every file the pod opens there
goes through here:

- directories are walked one component at a time from the home with `O_NOFOLLOW`, so no
  symlink (intermediate or last) leads outside it;
- what stands at a name is looked at with `lstat` first; only a regular file is opened, with
  `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY` (a FIFO or device swapped in after the look neither
  blocks nor becomes our terminal), and `fstat` confirms it is still a regular file;
- anything else is **set aside**: renamed, within its directory, to
  `<name>.invalid-<UTC time>` (the same shape as a corrupt `settings.json`), so nothing of the
  user's is lost and the next open makes a fresh file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | SAFE
READ = os.O_RDONLY | SAFE
PRIVATE_FILE = 0o640  # logs: the owner writes, the group may read, others nothing
PRIVATE_DIR = 0o750


class NotRegular(OSError):
    """What stands at a name is not a regular file; `kind` says what it is."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(f"{name} is {kind}, not a regular file")
        self.kind = kind


class OutsideHome(OSError):
    """A directory's real path leaves the home."""


def kind_of(mode: int) -> str:
    """What a mode describes, in words for a message."""
    for test, words in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"),
                        (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return words
    return "not a regular file" if not stat.S_ISREG(mode) else "a regular file"


def open_dir_inside(home: Path, directory: Path) -> int:
    """A descriptor of `directory`, which must lie inside `home` once symlinks are resolved;
    walked from the home one component at a time, none of them followed.

    The home path itself is the operator's and trusted (it may be a symlink to a volume)."""
    real_home = os.path.realpath(home)
    inside = os.path.relpath(os.path.realpath(directory), real_home)
    if inside == os.pardir or inside.startswith(os.pardir + os.sep) or os.path.isabs(inside):
        raise OutsideHome(f"{directory} leads outside {home}")
    fd = os.open(real_home, NOFOLLOW_DIR)
    try:
        for part in ([] if inside == os.curdir else inside.split(os.sep)):
            child = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(dir_fd: int, name: str, flags: int, mode: int = PRIVATE_FILE) -> int:
    """Open `name` in `dir_fd` if it is a regular file (or, with O_CREAT, absent); otherwise
    NotRegular, without having opened it (a device is never opened at all)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(name, kind_of(st.st_mode))
    try:
        fd = os.open(name, flags | SAFE, mode, dir_fd=dir_fd)
    except OSError as err:
        # Swapped in since the look: a symlink fails with ELOOP, a FIFO without a reader with
        # ENXIO (O_NONBLOCK for writing), a directory with EISDIR.
        if err.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            raise NotRegular(name, kind_of(st.st_mode)) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegular(name, kind_of(st.st_mode))
    return fd


def aside_name(name: str, now: datetime | None = None, taken: set[str] | None = None) -> str:
    """`<name>.invalid-<UTC time>`, with `-2`, `-3` … when that is taken."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    aside, n = f"{name}.invalid-{stamp}", 1
    while taken is not None and aside in taken:
        n += 1
        aside = f"{name}.invalid-{stamp}-{n}"
    return aside


def set_aside(dir_fd: int, name: str) -> str:
    """Rename `name` (whatever it is; a symlink is renamed, never followed) out of the way;
    returns its new name."""
    with os.scandir(dir_fd) as entries:
        taken = {entry.name for entry in entries}
    aside = aside_name(name, taken=taken)
    os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return aside


def make_private(fd: int, private: int) -> None:
    """Take group-write and every bit for others off an open file or directory we own."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & ~private & 0o777:
        with contextlib.suppress(PermissionError):  # not ours: its owner decides
            os.fchmod(fd, mode & private)
