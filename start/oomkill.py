"""Telling an OOM kill from any other SIGKILL, and each service's `oom_score_adj`.

A process the kernel's OOM killer ends dies of SIGKILL like one an operator `kill -9`ed; the
difference is only in the kernel's books. The one book an unprivileged container can read is
its memory cgroup's: `memory.events` (cgroup v2) or `memory.oom_control` (v1) count the
`oom_kill`s done in it. /dev/kmsg would name the victim's pid, but a container seldom may read
it (`dmesg_restrict`, or no such device), so it is not used. The rule (docs/LIFECYCLE.md, "Out
of memory"): a service's process that dies of SIGKILL while the counter has risen since the last
look was killed for memory. Each rise is given to one death only. A kill of a descendant that
is not a service's main process (a terminal's compiler under theia) raises the counter too; the
next SIGKILL death of a service before the counter is read again takes it, so the counter is
read again at every SIGKILL death: at most the kills since the last one can be misread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Where each hierarchy keeps the count: v2's file is hierarchical (descendants' kills count).
_FILES = (("", "memory.events"), ("unified", "memory.events"), ("memory", "memory.oom_control"))


def counter_file(proc_cgroup: str, root: Path = CGROUP_ROOT) -> Path | None:
    """The file holding the `oom_kill` count of the memory cgroup `/proc/self/cgroup`
    (`proc_cgroup`, its text) names, or None when none can be read."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        _id, _sep, rest = line.partition(":")
        controllers, _sep, cgroup = rest.partition(":")
        if controllers == "":
            paths["v2"] = cgroup
        elif "memory" in controllers.split(","):
            paths["v1"] = cgroup
    for mount, name in _FILES:
        path = paths.get("v1" if mount == "memory" else "v2")
        if path is None:
            continue
        base = root / mount if mount else root
        # Inside a cgroup namespace, or a container whose cgroup is mounted as the root, the
        # mount is the pod's cgroup itself although /proc names a path.
        for directory in (base / path.lstrip("/"), base):
            candidate = directory / name
            if read_count(candidate) is not None:
                return candidate
    return None


def read_count(path: Path) -> int | None:
    """The file's `oom_kill N` (None: unreadable, or a kernel older than 4.13 without it)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _sep, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdecimal():
            return int(value)
    return None


class OomCounter:
    """The pod's memory cgroup's kill count, and how much of it is already explained."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen = read_count(path) if path is not None else None

    @classmethod
    def of_this_process(cls) -> OomCounter:
        try:
            text = Path("/proc/self/cgroup").read_text()
        except OSError:
            return cls(None)
        return cls(counter_file(text))

    @property
    def available(self) -> bool:
        return self._seen is not None

    def took(self) -> bool:
        """A process just died of SIGKILL: whether the OOM killer did it (the count rose)."""
        if self.path is None or self._seen is None:
            return False
        now = read_count(self.path)
        if now is None:
            return False
        rose, self._seen = now > self._seen, now
        return rose


_POD: list[OomCounter] = []  # the one of this process, made before its first spawn


def pod_counter() -> OomCounter:
    """The pod's counter, its baseline read the first time this is called (before the first
    spawn, start.early): a kill before that is not a service's."""
    if not _POD:
        _POD.append(OomCounter.of_this_process())
    return _POD[0]


# -- oom_score_adj ---------------------------------------------------------------------------

OWN_SCORE = Path("/proc/self/oom_score_adj")


def own_score() -> int | None:
    try:
        return int(OWN_SCORE.read_text())
    except (OSError, ValueError):
        return None


def score_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/oom_score_adj").read_text())
    except (OSError, ValueError):
        return None


def set_score(pid: int, value: int) -> None:
    """From PID 1, just after the spawn; a refusal is read back and reported by the caller."""
    try:
        fd = os.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY)
    except OSError:
        return
    try:
        os.write(fd, str(value).encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def in_child(value: int, changes_user: bool) -> Callable[[], None]:
    """What the child runs between fork and exec to set its (and so its descendants')
    oom_score_adj.

    Refused (lowering below the pod's own without CAP_SYS_RESOURCE), it keeps the pod's value;
    the parent reads what it got and says so. After a change of user the kernel made the
    process non-dumpable, which makes its /proc files root's: dumpable again, it may write its
    own (exec sets the flag again as it would have been). libc is loaded here, in the parent:
    nothing is imported between fork and exec."""
    prctl = _prctl() if changes_user else None
    data = str(value).encode()

    def write_own() -> None:
        try:
            if prctl is not None:
                prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
            fd = os.open(OWN_SCORE, os.O_WRONLY)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError:
            pass  # the parent reads /proc/PID/oom_score_adj and reports the refusal

    return write_own


PR_SET_DUMPABLE = 4


def _prctl() -> Callable[..., int] | None:
    import ctypes  # only for a service with both user= and oom_score_adj

    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return function
