"""`podctl top`'s figures: each service's whole tree (healthz.census's attribution) at one moment.

CPU and memory come from the shared census (`healthz.proctree`); threads too (they are in
`stat`). Open descriptors and IO are read here, per member, only when `/v1/top` is asked: they
cost a directory listing and a file read per process, nothing the scrapes need.

IO counts are the kernel's `read_bytes` / `write_bytes` (what reached the storage layer) since
each process started, summed over the live members; the client makes rates of two readings.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from healthz.census import Census
from healthz.model import Pod
from healthz.proctree import ProcessTree


@dataclass(frozen=True, slots=True)
class TopRow:
    name: str
    state: str
    pid: int | None
    processes: int
    cpu_percent: float
    rss_bytes: int
    threads: int
    open_files: int
    read_bytes: int
    write_bytes: int


def _open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0  # ended meanwhile, or not ours to read


def _io(pid: int) -> tuple[int, int]:
    read = write = 0
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            for line in f:
                key, _, value = line.partition(b":")
                if key == b"read_bytes":
                    read = int(value)
                elif key == b"write_bytes":
                    write = int(value)
    except (OSError, ValueError):
        pass  # ended meanwhile, or no IO accounting in this kernel
    return read, write


def _row(name: str, state: str, pid: int | None, members: set[int], census: Census,
         cpu_percent: float) -> TopRow:
    rss = threads = files = read = write = 0
    for member in members:
        proc = census.procs[member]
        rss += proc.rss_bytes
        threads += proc.threads
        files += _open_files(member)
        r, w = _io(member)
        read += r
        write += w
    return TopRow(name, state, pid, len(members), round(cpu_percent, 1), rss, threads, files,
                  read, write)


def top(pod: Pod, tree: ProcessTree) -> dict[str, object]:
    """Every service's row, and one for the pod's processes no service accounts for."""
    snap = pod.snapshot()
    census = tree.census()
    rows: list[TopRow] = []
    mains: dict[str, list[int]] = {}
    for svc in snap.services:
        pids = pod.pids_of(svc.name) if svc.pid is not None else []
        mains[svc.name] = pids
        members = census.tree(svc.name, pids) if pids else set()
        usage = tree.usage(pids, svc.name) if pids else None
        rows.append(_row(svc.name, str(svc.state), svc.pid, members, census,
                         usage.cpu_percent if usage is not None else 0.0))
    stray = census.unattributed(mains)
    tree.forget_dead()
    return {
        "services": [asdict(row) for row in rows],
        "unattributed": asdict(_row("(unattributed)", "", None, stray, census, 0.0)),
        "cpu_count": os.cpu_count() or 1,
    }
