"""Every process that descended from one run of a service, whatever session or group it moved to.

A service's processes are its process group until one of them leaves it: a shell in Theia's
terminal is a session of its own (node-pty calls setsid), and so is anything started with
`setsid`, `nohup … &` from such a shell, or a daemon that double-forks. Signalling the group
misses them, and when the run ends they are reparented to PID 1 and live on.

So each run gets a mark in its environment (`CODITECT_SERVICE_RUN=<service>/<run>`), which every
descendant inherits through fork and exec whatever group it joins. When the run is stopped or
ends, the processes carrying its mark are found in /proc and signalled. Why a mark rather than
the alternatives:
- a cgroup per service needs a writable cgroup tree, which an unprivileged Kubernetes container
  does not have (/sys/fs/cgroup is read-only there);
- a subreaper shim per service adds a process per service and changes the pid we supervise;
- following parent links in /proc loses a process as soon as its parent dies (a double fork).
The mark costs nothing while services run: /proc is read only when a run is stopped or ends.

What it cannot attribute (docs/LIFECYCLE.md): a process that removed the variable from its
environment before an exec (`env -i`, a sandbox that clears it), and one whose environment we
may not read (another user's when we are not root, a setuid program's). Those outlive their
run, as any process did before; /metrics counts them (`healthz.census`).

Each process is identified by (pid, start time) when found and checked again through a pidfd
before it is signalled, so a pid reused in between is never signalled.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time

from healthz.marks import RUN_MARK

MARK = RUN_MARK  # the name this module and start.process use

_runs = itertools.count(1)


def new_mark(service: str) -> str:
    """A mark no other run of this pod shares (the clock tells pod lifetimes apart)."""
    return f"{service}/{next(_runs)}.{time.monotonic_ns()}"


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return None
    # Field 22 of stat is the start time; after the ")" of the name, fields count from 3.
    return int(fields[19]) if len(fields) > 19 else None


def _carries(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return needle in b"\0" + environ.read()
    except OSError:
        return False  # gone, or another user's


def mark_of(pid: int) -> str | None:
    """The run mark process `pid` carries, if any (None too when it is gone or unreadable)."""
    prefix = f"{MARK}=".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            entries = environ.read().split(b"\0")
    except OSError:
        return None
    for entry in entries:
        if entry.startswith(prefix):
            return entry[len(prefix):].decode("utf-8", "replace")
    return None


def marked(mark: str) -> list[tuple[int, int]]:
    """(pid, start time) of every live process carrying `mark`."""
    needle = f"\0{MARK}={mark}\0".encode()
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        if _carries(pid, needle):
            started = _start_time(pid)
            if started is not None:
                found.append((pid, started))
    return found


def signal_marked(mark: str, signum: int) -> int:
    """Send `signum` to every process carrying `mark`; how many were signalled."""
    needle = f"\0{MARK}={mark}\0".encode()
    sent = 0
    for pid, started in marked(mark):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue  # gone since
        try:
            # The pidfd holds this very process; if it is still the one we found (same start
            # time, still marked), no other process can receive the signal.
            if _start_time(pid) == started and _carries(pid, needle):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    signal.pidfd_send_signal(pidfd, signum)
                    sent += 1
        finally:
            os.close(pidfd)
    return sent
