"""The container's termination message: one line saying why `coditect-start` ended.

Kubernetes shows the file's content as the container's last state (`kubectl describe pod`,
`lastState.terminated.message`), so whoever looks at a restarted pod reads the cause without
digging through logs. By default it is `/dev/termination-log`, the kubelet's file, when it
exists and can be written; `--termination-log PATH` / CODITECT_TERMINATION_LOG choose another
(the manifest's `terminationMessagePath`). Without either, nothing is written.

The cause is taken at the first stop signal, before the drain stops anything: when the
kubelet's SIGTERM follows a failing /livez (a restart budget used up) or /startupz (a
critical service fatal), the message names that cause, not the drain it started.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from healthz.model import OOM_KILLED, ServiceSnapshot, State

KUBELET_FILE = Path("/dev/termination-log")
MAX_BYTES = 4096  # the kubelet keeps no more of it


def choose(given: str | None) -> Path | None:
    """The file to write: the flag's or variable's (an empty value turns it off), else the
    kubelet's when it exists and is writable, else none."""
    if given is not None:
        return Path(given) if given.strip() else None
    if KUBELET_FILE.exists() and os.access(KUBELET_FILE, os.W_OK):
        return KUBELET_FILE
    return None


def cause_at_signal(services: Iterable[ServiceSnapshot]) -> str | None:
    """Why the kubelet may be stopping the pod, as it stands when the signal comes: a critical
    service past its restart budget (/livez failed), else one that is fatal (/startupz,
    /readyz failed); None for an ordinary stop."""
    critical = [s for s in services if s.critical]
    for service in critical:
        if service.budget_exhausted:
            return out_of_memory(f"restart budget of {service.name} exhausted",
                                 service.last_exit)
    for service in critical:
        if service.state is State.FATAL:
            return out_of_memory(f"critical service {service.name} fatal", service.last_exit)
    return None


def out_of_memory(cause: str, last_exit: str | None) -> str:
    """The cause, saying so when the OOM killer ended the last run: what to fix is memory."""
    return f"{cause}; last exit: OOM killer" if last_exit == OOM_KILLED else cause


def after_drain(cause: str | None, killed: list[str]) -> str:
    """The message once the drain is over: the cause if there was one, else how it went."""
    if cause is not None:
        return cause
    if killed:
        return f"drain deadline hit ({', '.join(killed)})"
    return "drained"


def write(path: Path, message: str) -> str | None:
    """Write `message` as the file's only line; None, or why it could not be written."""
    data = (message.replace("\n", " ") + "\n").encode()[:MAX_BYTES]
    try:
        # Not O_CREAT for the kubelet's file: it is there or it is not ours to make.
        flags = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        if path != KUBELET_FILE:
            flags |= os.O_CREAT
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as error:
        return f"{path}: {error.strerror or error}"
    return None
