"""One pod per run directory: a lock on `$CODITECT_RUN/pod.lock`, held for the pod's life.

Two pods on one run directory would fight over its control socket and its catalogue cache,
and both would spawn the whole catalogue. A pid file cannot tell them apart (every
container's PID 1 is pid 1, and a stale file outlives a killed pod), so the pod holds an
exclusive `flock` on a file there instead: the kernel releases it when the pod's process
ends, however it ends. What the file says (who holds it) is only for the message a second
pod prints; the lock is the truth.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = "pod.lock"

_held: list[int] = []  # the locked descriptor, open for as long as this process lives


class PodAlreadyRunning(Exception):
    """Another live process holds the run directory's lock; `str()` is the one line to print."""


def lock_run_dir(run_dir: Path) -> None:
    """Take the run directory's lock for the rest of this process's life, or raise
    PodAlreadyRunning naming the holder. OSError when the file cannot be made at all."""
    path = run_dir / LOCK_NAME
    # O_NOFOLLOW: the run directory is ours, but a link there must not make us lock (and
    # write) a file elsewhere. O_CLOEXEC: a child must not keep the lock after the pod ends.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = _holder(fd)
        os.close(fd)
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        raise PodAlreadyRunning(
            f"another pod already runs on the run directory {run_dir} ({holder}; it holds "
            f"{path}); stop it first, or give this pod a run directory of its own with "
            "--run-dir / CODITECT_RUN") from None
    os.ftruncate(fd, 0)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.write(fd, f"pid {os.getpid()} on host {os.uname().nodename}, since {started}\n"
             .encode())
    _held.append(fd)


def _holder(fd: int) -> str:
    """What the holder wrote about itself, or that it did not say (it is still starting)."""
    try:
        said = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        said = ""
    return said.splitlines()[0] if said else "it has not said who it is yet"
