"""Refuse before the first write what would fail halfway: no room, or no permission."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import EX_CANTCREAT, EX_IOERR, InitError, write_failed
from .plan import Plan


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def space(plan: Plan) -> None:
    """Fail when the home's filesystem clearly cannot hold what the plan writes.

    A rough, generous estimate (one extra block per entry for its metadata); the writer still
    handles ENOSPC, but this way a full volume usually leaves the home untouched.
    """
    if not plan.steps:
        return
    where = nearest_existing(plan.home)
    try:
        fs = os.statvfs(where)
    except OSError as err:
        raise write_failed(err, where, "inspect") from None
    block = fs.f_frsize or fs.f_bsize or 4096
    root = os.geteuid() == 0  # root may use the blocks reserved for it
    need = sum(-(-step.size // block) + 1 for step in plan.steps)
    free = fs.f_bfree if root else fs.f_bavail
    if need > free:
        raise InitError(f"not enough space for {plan.home}: about {need * block // 1024} KiB "
                        f"needed, {free * block // 1024} KiB free — free some space or grow "
                        "the volume, then start again", EX_IOERR)
    inodes = fs.f_ffree if root else fs.f_favail
    if fs.f_files and len(plan.steps) > inodes:  # f_files 0: the filesystem does not count
        raise InitError(f"not enough inodes for {plan.home}: {len(plan.steps)} needed, "
                        f"{inodes} free — free some files or grow the volume", EX_IOERR)


def writable(plan: Plan) -> None:
    """Fail when a directory the plan writes into exists but is not writable by us."""
    checked: set[str] = set()
    created = {step.real for step in plan.steps if step.op == "dir"}
    for step in plan.steps:
        parent = step.real.rpartition("/")[0]
        if parent in checked or parent in created:
            continue
        checked.add(parent)
        where = nearest_existing(plan.home / parent)
        if os.access(where, os.W_OK | os.X_OK):
            continue
        try:
            read_only = bool(os.statvfs(where).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = ("is on a read-only filesystem — mount it read-write" if read_only else
               f"is not writable by uid {os.geteuid()} — give this user write access to the "
               "home or choose another")
        raise InitError(f"cannot write in {where}: it {why}", EX_CANTCREAT)
