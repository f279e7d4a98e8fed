"""The soak's surroundings, built inside the private mount and network namespaces that
`soak.cli` starts the driver in (`unshare --net --mount`): the loopback up, the root filesystem
read-only apart from `CODITECT_HOME`, `CODITECT_RUN` and a temporary directory (a tmpfs each,
owned by the unprivileged user), and the paths the pod runs from reachable by that user.

Nothing here outlives the namespace: every mount disappears with it.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import socket
import stat
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from soak.errors import SoakError

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
# Mounts left writable: the kernel's own, which a read-only root filesystem keeps as they are.
KERNEL_MOUNTS = (Path("/proc"), Path("/sys"), Path("/dev"))
WRITABLE_SIZE = "512m"  # per tmpfs; the flooder's rotated logs are the bulk (~90 MB)


@dataclass(frozen=True, slots=True)
class Account:
    """The unprivileged user the pod runs as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def named(cls, name: str) -> Account:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise SoakError(f"no user {name!r}; create it (useradd --system {name}) "
                            "or pass --user") from None
        if entry.pw_uid == 0:
            raise SoakError(f"user {name!r} is root; the soak runs the pod unprivileged")
        groups = tuple(os.getgrouplist(name, entry.pw_gid))
        return cls(name, entry.pw_uid, entry.pw_gid, groups)

    def can_enter(self, path: Path) -> bool:
        """Whether this user may traverse (search) directory `path`."""
        info = path.stat()
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid in self.groups:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)


@dataclass(frozen=True, slots=True)
class Sandbox:
    base: Path
    home: Path  # CODITECT_HOME
    run: Path  # CODITECT_RUN
    tmp: Path  # TMPDIR
    workspace: Path  # what the file monitor watches: read-only like the rest

    @property
    def writable(self) -> tuple[Path, ...]:
        return (self.home, self.run, self.tmp)


def loopback_up() -> None:
    """A new network namespace has only `lo`, and it is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SoakError(f"mount {' '.join(args)}: {done.stderr.strip()}")


def build(base: Path, account: Account, needed: list[Path]) -> Sandbox:
    """Everything the pod's filesystem needs, ending with the read-only remount."""
    mount("-t", "tmpfs", "-o", "mode=0755,size=16m", "soak-base", str(base))
    box = Sandbox(base=base, home=base / "home", run=base / "run", tmp=base / "tmp",
                  workspace=base / "workspace")
    for path in (box.home, box.run, box.tmp, box.workspace / "src", base / "stash"):
        path.mkdir(parents=True)
    (box.workspace / "src" / "main.py").write_text("print('the soak workspace')\n")
    expose(needed, account, base / "stash")
    for path in box.writable:
        mount("-t", "tmpfs", "-o", f"mode=0700,uid={account.uid},gid={account.gid},"
              f"size={WRITABLE_SIZE}", f"soak-{path.name}", str(path))
    read_only_except(box.writable)
    return box


def expose(needed: list[Path], account: Account, stash: Path) -> None:
    """Make each of `needed` reachable by `account` at its own path, so that absolute paths
    baked into it (a venv's interpreter symlink and RUNPATH, console-script shebangs) still
    work. CI may clone under /root (0700) and pyenv lives there: a directory the user cannot
    enter is covered, in this namespace only, by a tmpfs holding just the needed paths,
    bind-mounted back in. A needed path the user cannot read itself is an error."""
    blocked: dict[Path, list[Path]] = {}
    for path in needed:
        ancestor = next((a for a in reversed(path.parents) if not account.can_enter(a)), None)
        if not account.can_enter(path):
            raise SoakError(f"{path} is not readable by user {account.name}; make it "
                            "world-readable (chmod -R o+rX) or clone elsewhere")
        if ancestor is not None:
            blocked.setdefault(ancestor, []).append(path)
    # Cover the outermost blocked directories only: an inner one is recreated 0755 anyway.
    outermost = {a: paths for a, paths in blocked.items()
                 if not any(other in a.parents for other in blocked)}
    for ancestor, paths in blocked.items():
        if ancestor not in outermost:
            top = next(o for o in outermost if o in ancestor.parents)
            outermost[top].extend(paths)
    for ancestor, paths in outermost.items():
        stashed = []
        for index, path in enumerate(dict.fromkeys(paths)):
            spot = stash / f"{len(list(stash.iterdir()))}-{index}"
            spot.mkdir()
            mount("--rbind", str(path), str(spot))
            stashed.append((path, spot))
        mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "soak-exposed", str(ancestor))
        for path, spot in stashed:
            path.mkdir(parents=True, exist_ok=True)
            mount("--move", str(spot), str(path))


def mount_points() -> list[Path]:
    """Every mount point of this namespace, in mount order (octal escapes decoded)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        field = line.split()[4]
        points.append(Path(field.encode().decode("unicode_escape")))
    return points


def read_only_except(writable: tuple[Path, ...]) -> None:
    """Remount every mount read-only (per mount, so only this namespace sees it), except the
    kernel's and `writable`: the root filesystem a hardened pod gets."""
    for point in dict.fromkeys(mount_points()):
        if any(point == k or k in point.parents for k in KERNEL_MOUNTS):
            continue
        if point in writable:
            continue
        if not point.exists():
            # Hidden under a mount made since (the tmpfs over an exposed path's ancestors):
            # nothing can reach it, so it needs no read-only remount. Container storage under
            # a home directory (podman's overlays) ends up here.
            continue
        mount("-o", "remount,bind,ro", str(point))
