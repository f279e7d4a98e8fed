"""Carry out a plan: every write atomic, every directory opened without following symlinks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from . import atomic
from .errors import template_failed, write_failed
from .plan import Plan, Step

_CHUNK = 1 << 20


def apply(plan: Plan, home_fd: int) -> list[str]:
    """Write what the plan says into the home open at `home_fd`; returns warnings."""
    warnings: list[str] = []
    with ExitStack() as stack:
        dirs = _Dirs(plan.home, home_fd, stack)
        for rel in plan.leftovers:
            parent, _, name = rel.rpartition("/")
            try:
                atomic.remove_leftover(dirs.fd(parent), name)
                warnings.append(f"removed {plan.home / rel}, left by an interrupted run")
            except OSError as err:
                warnings.append(f"could not remove {plan.home / rel}, left by an interrupted "
                                f"run: {err.strerror}")
        for step in plan.steps:
            parent, _, name = step.real.rpartition("/")
            path = plan.home / step.real
            try:
                fd = dirs.fd(parent)
                if step.op == "dir":
                    atomic.make_dir(fd, name, mode=step.mode, owner=step.owner)
                elif step.op == "aside":
                    # Within one directory, and rename() moves a symlink, never its target.
                    os.rename(name, step.to, src_dir_fd=fd, dst_dir_fd=fd)
                    os.fsync(fd)
                elif step.op == "replace":
                    atomic.replace(fd, name, _content(step), mode=step.mode, owner=step.owner)
                elif not atomic.write_new(fd, name, _content(step), mode=step.mode,
                                          owner=step.owner):
                    warnings.append(f"{path} appeared while preparing; kept as it is")
            except OSError as err:
                raise write_failed(err, path, "write") from None
    return warnings


class _Dirs:
    """Directory descriptors of the home by real relative path, opened on first use."""

    def __init__(self, home: Path, home_fd: int, stack: ExitStack) -> None:
        self.home, self.stack = home, stack
        self.fds: dict[str, int] = {"": home_fd}

    def fd(self, real: str) -> int:
        if real not in self.fds:
            parent, _, name = real.rpartition("/")
            fd = atomic.open_dir(self.fd(parent), name)
            self.stack.callback(os.close, fd)
            self.fds[real] = fd
        return self.fds[real]


def _content(step: Step) -> Iterator[bytes]:
    if step.source is None:
        yield step.content or b""
        return
    try:
        with open(step.source, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
    except OSError as err:
        # Not an OSError any more: a template problem must not pass for a full home disk.
        raise template_failed(err, step.source) from None
