"""One pass over /proc: every process, its parent, memory, CPU and run mark.

Whose a process is comes from two sources. Its parent links say which service's main process
it descends from while its ancestors live; its run mark (`healthz.marks.RUN_MARK`, inherited
through fork and exec whatever session it moved to) says which service's run started it even
after it was reparented. A service's tree is the union of both; a process of the pod that
neither attributes, and that is not one of the engine's own helpers, is *unattributed*
(docs/LIFECYCLE.md lists how a process gets there).

Read with plain reads of /proc/PID/stat and /proc/PID/environ rather than psutil: with 2,000
processes in the pod, psutil's per-process objects made one pass four times dearer (about
210 ms of CPU against 50 ms), and this pass runs on the engine's event loop.

A process's mark is read once, when it is first seen, and kept with its (pid, start time):
the steady state of a big build then costs one read of `stat` a process. The mark seen first
is the one it was started with; a later `exec` under `env -i` does not make it anyone else's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from healthz.marks import HELPER_MARK, RUN_MARK, service_of

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_RUN_NEEDLE = f"\0{RUN_MARK}=".encode()
_HELPER_NEEDLE = f"\0{HELPER_MARK}=".encode()

Identity = tuple[int, int]  # (pid, start time in clock ticks): a pid is reused, this pair not


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    ppid: int
    started: int  # clock ticks after boot
    rss_bytes: int
    cpu_seconds: float  # user + system of the process itself
    reaped_cpu_seconds: float  # user + system of its children it has reaped
    threads: int = 1

    @property
    def identity(self) -> Identity:
        return self.pid, self.started


@dataclass(frozen=True, slots=True)
class Origin:
    """What a process's environment says about it."""

    mark: str | None  # the run mark's value, None without one (or unreadable)
    helper: bool  # one of the engine's own helpers


@dataclass
class Census:
    """Every live process at one moment; `pod` are those descending from the engine."""

    root: int
    procs: dict[int, Proc] = field(default_factory=dict)
    children: dict[int, list[int]] = field(default_factory=dict)
    origins: dict[int, Origin] = field(default_factory=dict)  # for the pod's processes only

    def descendants(self, pids: Iterable[int]) -> set[int]:
        """`pids` that are alive and everything below them by parent links."""
        found: set[int] = set()
        pending = [pid for pid in pids if pid in self.procs]
        while pending:
            pid = pending.pop()
            if pid not in found:
                found.add(pid)
                pending.extend(self.children.get(pid, ()))
        return found

    def pod(self) -> set[int]:
        """The engine's descendants, the engine itself left out."""
        return self.descendants(self.children.get(self.root, ()))

    def marked_for(self, service: str) -> set[int]:
        """The pod's processes carrying a mark of any run of `service`."""
        return {pid for pid, origin in self.origins.items()
                if origin.mark is not None and service_of(origin.mark) == service}

    def tree(self, service: str, main_pids: Iterable[int]) -> set[int]:
        """What one service's figures count: descendants of its main process by parent links,
        and every process its runs marked, wherever it went."""
        return self.descendants([*main_pids, *self.marked_for(service)])

    def unattributed(self, services: dict[str, list[int]]) -> set[int]:
        """The pod's processes no service's tree holds and not the engine's helpers (nor
        anything below a helper)."""
        attributed: set[int] = set()
        for name, main_pids in services.items():
            attributed |= self.tree(name, main_pids)
        helpers = self.descendants(pid for pid, origin in self.origins.items() if origin.helper)
        return self.pod() - attributed - helpers


def _read(path: str, whole: bool = False) -> bytes | None:
    """A /proc file's bytes (`stat` fits one read; an environment may not). Plain os calls:
    a file object's buffering costs a third more across 2,000 processes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = [os.read(fd, 65536)]
        while whole and chunks[-1]:
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_stat(pid: int) -> Proc | None:
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None  # ended meanwhile
    fields = text.rpartition(b")")[2].split()
    # After the ")" of the name the fields count from 3 (state): ppid is 4, utime 14, stime 15,
    # cutime 16, cstime 17, num_threads 20, starttime 22, rss 24 (proc(5)). A zombie is no
    # longer alive.
    if len(fields) < 22 or fields[0] == b"Z":
        return None
    return Proc(pid=pid, ppid=int(fields[1]), started=int(fields[19]),
                rss_bytes=int(fields[21]) * _PAGE,
                cpu_seconds=(int(fields[11]) + int(fields[12])) / _TICKS,
                reaped_cpu_seconds=(int(fields[13]) + int(fields[14])) / _TICKS,
                threads=int(fields[17]))


def _read_origin(pid: int) -> Origin:
    environ = _read(f"/proc/{pid}/environ", whole=True)
    if environ is None:
        return Origin(None, False)  # ended, or not ours to read (another user's, setuid)
    data = b"\0" + environ
    at = data.find(_RUN_NEEDLE)
    mark = None
    if at >= 0:
        start = at + len(_RUN_NEEDLE)
        end = data.find(b"\0", start)
        mark = data[start:end if end >= 0 else len(data)].decode("utf-8", "replace")
    return Origin(mark, _HELPER_NEEDLE in data)


class Scanner:
    """Takes censuses, remembering each process's origin between them."""

    def __init__(self, root: int | None = None) -> None:
        self.root = os.getpid() if root is None else root
        self._origins: dict[Identity, Origin] = {}

    def scan(self) -> Census:
        census = Census(self.root)
        for name in os.listdir("/proc"):
            if name.isdigit():
                proc = _read_stat(int(name))
                if proc is not None:
                    census.procs[proc.pid] = proc
                    census.children.setdefault(proc.ppid, []).append(proc.pid)
        origins: dict[Identity, Origin] = {}
        for pid in census.pod():
            identity = census.procs[pid].identity
            origin = self._origins.get(identity)
            if origin is None:
                origin = _read_origin(pid)
            origins[identity] = origin
            census.origins[pid] = origin
        self._origins = origins  # only the live: the cache follows the pod
        return census
