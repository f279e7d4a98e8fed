"""What a catalogue means, frozen: the services the engine runs, and what they were read from.

Imports nothing heavy: the engine, and a warm boot that takes its catalogue from
`start.catalogue.cache`, need the specs, not the parser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from healthz.spec import HealthSpec


def stamp_of(path: str) -> tuple[int, ...]:
    """What changes when a file is edited, replaced or touched; () when it cannot be seen."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return ()
    return (info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino, info.st_dev)


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a parse read besides the environment: each file with its stat taken before it was
    read (so a change during the parse makes the next key differ, never match stale content),
    and each `[include]` pattern with the files it matched."""

    stamps: tuple[tuple[str, tuple[int, ...]], ...] = ()
    globs: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What makes a catalogue entry a one-shot task ([task:NAME]): it runs to completion and is
    not restarted; its exit 0 is what its dependents wait for (start.lifecycle)."""

    timeout: float | None = None  # seconds a run may take before its group is killed
    once: str = "boot"  # "boot": every boot; "volume": until its stamp says it is done


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One service, as the engine runs it. Built once from a ProcessConfig and a HealthSpec."""

    name: str
    argv: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]  # added to the pod's own environment
    directory: str | None
    uid: int | None
    umask: int | None
    priority: int
    autostart: bool
    autorestart: str  # "true" | "false" | "unexpected"
    startsecs: float
    startretries: int
    exitcodes: tuple[int, ...]
    stopsignal: int
    stopwaitsecs: float
    redirect_stderr: bool
    logfile_maxbytes: int
    logfile_backups: int
    health: HealthSpec  # `after` holds service names (a program's name resolved to its processes)
    source: str  # the file that defined it, for messages
    program: str = ""  # the [program:x] it comes from (differs from `name` with numprocs)
    transient: bool = False  # added by `podctl run`, never part of a catalogue (start.transient)
    # The pod's secrets this service is not given: removed from its environment and its exec
    # probes', whoever set them (start.catalogue.secrecy decides, start.childenv applies).
    withheld: tuple[str, ...] = ()
    task: TaskSpec | None = None  # a one-shot task, not a service that keeps running

    @property
    def after(self) -> tuple[str, ...]:
        return self.health.after


@dataclass(frozen=True, slots=True)
class Catalogue:
    services: tuple[ServiceSpec, ...]  # in spawn order: priority, then name
    notes: tuple[str, ...] = ()
    files: tuple[str, ...] = field(default=())
    # What it was built from, for the cache's key; not part of what the catalogue means.
    provenance: Provenance | None = field(default=None, compare=False)

    @property
    def secret_names(self) -> frozenset[str]:
        """Every variable some service names in `secrets=`: a secret for the whole pod."""
        return frozenset(name for s in self.services for name in s.health.secrets)

    def get(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.services if s.name == name), None)
