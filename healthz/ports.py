"""The TCP ports listening in the pod, each with the service whose run owns it (`podctl ports`).

The listeners are the kernel's tables, /proc/net/tcp and tcp6, of the network namespace PID 1
is in: the pod's. A listener names its socket's inode; the process holding it is found by
reading the links under /proc/PID/fd of the engine and its descendants only (not of every
process on a host), and only when asked: the control route or a scrape, never a timer.

A process is attributed as the census attributes it (healthz.census): below a service's main
process, or carrying a run's mark: a dev server a person started in Theia's terminal belongs to
theia's run (`via` says `mark` when it left the main process's tree).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from healthz.census import Census

LISTEN = "0A"  # the TCP state in /proc/net/tcp (include/net/tcp_states.h)
ENGINE = "coditect-start"  # the health port and anything else PID 1 itself listens on


@dataclass(frozen=True, slots=True)
class Listener:
    address: str
    port: int
    inode: int


@dataclass(frozen=True, slots=True)
class Port:
    address: str
    port: int
    service: str | None  # None: not a process of the pod's (or it ended meanwhile)
    pid: int | None
    via: str | None  # "tree" (below the main process), "mark" (left it, still the run's), "engine"
    command: str | None  # the process's name (comm): for the control socket only


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # The kernel prints each 32-bit word in host order (little-endian here).
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listeners(proc: str = "/proc") -> list[Listener]:
    """Every listening TCP socket of this network namespace, IPv4 and IPv6."""
    found: list[Listener] = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/net/{table}", encoding="ascii") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue  # no IPv6 in this kernel
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            host, _, port = fields[1].partition(":")
            found.append(Listener(_address(host), int(port, 16), int(fields[9])))
    return sorted(found, key=lambda item: (item.port, item.address))


def socket_owners(pids: set[int], inodes: set[int]) -> dict[int, int]:
    """inode → the pid holding it, looking only at `pids`' descriptors."""
    owners: dict[int, int] = {}
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    for pid in sorted(pids):  # the oldest first: a forked worker's copy loses to its parent
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None:
                owners.setdefault(inode, pid)
        if len(owners) == len(wanted):
            break
    return owners


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _attribute(pid: int, census: Census, mains: dict[str, list[int]]) -> tuple[str | None,
                                                                                str | None]:
    if pid == census.root:
        return ENGINE, "engine"
    for name, pids in mains.items():
        if pid in census.descendants(pids):
            return name, "tree"
    for name in mains:
        if pid in census.tree(name, ()):
            return name, "mark"
    return None, None


def ports(census: Census, mains: dict[str, list[int]]) -> list[Port]:
    """The pod's listeners, each attributed; `mains` maps each service to its main pids."""
    found = listeners()
    owners = socket_owners(census.pod() | {census.root}, {item.inode for item in found})
    result: list[Port] = []
    for item in found:
        pid = owners.get(item.inode)
        service, via = _attribute(pid, census, mains) if pid is not None else (None, None)
        result.append(Port(item.address, item.port, service, pid, via,
                           _comm(pid) if pid is not None else None))
    return result
