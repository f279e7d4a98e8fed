"""The small interface between the engine and the faces that tell its health.

The engine (``start``) implements :class:`Pod`; everything in ``healthz`` reads it. Data flows
one way: the faces ask for a :class:`PodSnapshot` and never reach into the engine's objects.
This module imports nothing heavy: the engine imports it before its first spawn. (What a
service name may be is `healthz.names`, which podctl uses too.)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class State(enum.StrEnum):
    """Lifecycle states of one service (drawn in docs/LIFECYCLE.md)."""

    STOPPED = "stopped"  # not running and not asked to run
    WAITING = "waiting"  # asked to run, waiting for the services named in `after`
    STARTING = "starting"  # spawned; its ready probe not passed yet (without one: startsecs)
    RUNNING = "running"  # spawned and started (ready probe passed, or past startsecs)
    BACKOFF = "backoff"  # died; a restart is scheduled
    STOPPING = "stopping"  # stop signal sent, waiting for the process group to go
    EXITED = "exited"  # ended and autorestart says leave it
    FATAL = "fatal"  # start retries used up; still retried, at the backoff cap


# A service's last exit when its process died of SIGKILL and the pod's memory cgroup counted an
# OOM kill meanwhile (start.oomkill), instead of describe_status's "signal 9 (SIGKILL)".
OOM_KILLED = "signal 9 (SIGKILL): OOM killer"


@dataclass(frozen=True, slots=True)
class ServiceSnapshot:
    """What is known of one service at one moment. `reason` is for the control socket only."""

    name: str
    state: State
    critical: bool
    ready: bool  # the readiness verdict: probe passed recently (or running, with no probe)
    live: bool  # the liveness verdict: not failed `failures` liveness probes in a row
    pid: int | None
    started_at: float | None  # wall-clock time of the current spawn
    restarts: int
    restarts_by_reason: dict[str, int] = field(default_factory=dict)
    last_exit: str | None = None  # "exit 1", "signal 9 (SIGKILL)"
    last_exit_code: int | None = None  # exit status, or -signal
    reason: str = ""  # why it is not ok; never shown on the TCP port
    budget_exhausted: bool = False  # used up its restart_budget (critical: /livez fails)
    log_write_failures: int = 0  # chunks its log file could not take (full or read-only volume)
    transient: bool = False  # added by `podctl run`, not by the catalogue
    status: str = ""  # what the service said of itself (sd_notify's STATUS=); control socket only
    task: bool = False  # a one-shot task ([task:NAME]): ready once it exited 0
    failed: bool = False  # a task failed for good, or a service is held back by one
    recent_restarts: int = 0  # crash, exit and liveness restarts inside restart_window
    restart_window: float = 600.0  # seconds: restart_budget's window, else ten minutes
    oom_kills: int = 0  # runs the kernel's OOM killer ended
    after: tuple[str, ...] = ()  # the services it waits for (`after`, resolved): the timeline's


@dataclass(frozen=True, slots=True)
class PodSnapshot:
    services: tuple[ServiceSnapshot, ...]
    draining: bool
    started_up: bool  # every critical service has been ready since boot
    booted_at: float
    reload_errors: tuple[str, ...] = ()
    home_problems: tuple[str, ...] = ()  # $CODITECT_HOME could not be prepared (degraded)
    seeded: tuple[float, float] | None = None  # the seeding's wall-clock start and end
    notify_ignored: int = 0  # sd_notify datagrams from no service's run (start.notify)

    def service(self, name: str) -> ServiceSnapshot | None:
        return next((s for s in self.services if s.name == name), None)


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A transient service to add (`podctl run`, POST /v1/run): checked for form by
    `healthz.run_request`, for what the pod can run by the engine."""

    name: str
    argv: tuple[str, ...]
    directory: str  # absolute: podctl sends its own working directory by default
    environment: tuple[tuple[str, str], ...] = ()  # added to the pod's environment, not podctl's


class RunRefused(ValueError):
    """The pod will not add this transient service, and nothing was started. `conflict`: the
    name is taken or the pod is draining (409); otherwise the request cannot run (400)."""

    def __init__(self, message: str, *, conflict: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict


@dataclass(frozen=True, slots=True)
class CatalogueCheck:
    """What the engine's own check found in the catalogue the pod runs from: findings only,
    one line each, never the environment or the values it expanded."""

    valid: bool
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    summary: str = ""  # "catalogue valid: 5 services (…)", or why it is not
    ran: bool = True  # False: the check itself could not run (timeout, crash); see problems
    catalogue: str = ""  # where the pod reads its catalogue from
    overlay: str | None = None


class UnknownService(LookupError):
    """A verb named a service the catalogue does not have."""


class VerbFailed(RuntimeError):
    """A verb was carried out but did not reach its goal; ``str(exc)`` says why.

    For example a start whose process died inside ``startsecs``, or a stop that needed SIGKILL.
    The control socket answers it as ``{"ok": false, "message": str(exc)}``.
    """


class Pod(Protocol):
    """What the faces may ask of the engine."""

    def snapshot(self) -> PodSnapshot: ...

    def loop_lag(self) -> float:
        """Seconds the event loop was late on its last lag timer, armed by the previous reading
        (a stuck loop fails /livez)."""
        ...

    async def start_service(self, name: str) -> str: ...

    async def stop_service(self, name: str) -> str: ...

    async def restart_service(self, name: str) -> str: ...

    async def signal_service(self, name: str, signum: int) -> str: ...

    async def run_transient(self, request: RunRequest) -> str:
        """Add a transient service and start it; the outcome as a verb's. RunRefused when it
        cannot be added."""
        ...

    async def reload(self) -> tuple[bool, list[str]]:
        """Re-read the catalogue; (applied, messages)."""
        ...

    def pids_of(self, name: str) -> list[int]:
        """Main pid first, for resource accounting of the whole process tree."""
        ...

    async def check_catalogue(self) -> CatalogueCheck:
        """The engine's check of the catalogue the pod runs from, with the pod's overlay and
        environment, done off the event loop."""
        ...

    def log_path(self, name: str) -> str:
        """Where the service `name` (a valid service name) has its log file, current or
        not: the file may not exist (yet, or any more)."""
        ...
