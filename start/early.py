"""Before the engine: `.coditect` prepared, stop signals kept, the first services spawned.

Importing asyncio and the engine and setting up the loop take ~30 ms, and the services that
wait for nothing need none of it to start. So `coditect-start` spawns them first, with the
engine's own `start.process.spawn`, and the engine adopts them as it boots
(`EngineContext.prespawned`): their start-up, the slowest part of a pod's, begins that much
sooner. This is step 1 of the boot's timeline (`start.boot`), the one that must run before
asyncio is imported.

A stop signal that arrives meanwhile is kept (start.stopsignals, from `coditect-start`'s first
line) and acted on once the engine's handlers are in place.
"""

from __future__ import annotations

import signal
import sys

from start.catalogue import Catalogue, ServiceSpec
from start.errors import EXIT_RUNTIME
from start.oomkill import pod_counter
from start.process import ChildProcess, SpawnError, become_subreaper, needs_notify_socket, spawn
from start.settings import Settings


def prepare_directories(settings: Settings) -> int | None:
    """`.coditect` seeded (or its problems reported: they degrade the pod, they never stop
    it, see start.homecheck), the run directory made and usable; or the exit code after a
    one-line reason on stderr."""
    # Not on a warm boot's import path before it is needed: seeding imports json and shutil.
    from start.homecheck import CONSEQUENCE, prepare_home
    from start.mounts import run_dir_problem
    from start.podlock import PodAlreadyRunning, lock_run_dir

    try:
        # Before any child starts: the control socket goes there, and a pod without it
        # cannot be steered (an engine's plain --tmpfs is root's, mode 0755).
        problem = run_dir_problem(settings.run_dir)
        if problem:
            sys.stderr.write(f"coditect-start: {problem}\n")
            return EXIT_RUNTIME
        # Before `.coditect` is touched or anything spawns: a second pod here is refused.
        lock_run_dir(settings.run_dir)
    except PodAlreadyRunning as refused:
        sys.stderr.write(f"coditect-start: {refused}\n")
        return EXIT_RUNTIME
    except OSError as error:
        sys.stderr.write(f"coditect-start: cannot create {error.filename}: {error.strerror}; "
                         "check the volume and its permissions\n")
        return EXIT_RUNTIME
    for home_problem in prepare_home(settings.home, settings.template):
        sys.stderr.write(f"coditect-start: warning: {home_problem} — {CONSEQUENCE}\n")
    return None


def first_wave(catalogue: Catalogue) -> list[ServiceSpec]:
    """What the engine's boot spawns at once, in its order: the autostart services whose
    `after=` names no autostart service (those wait for their dependencies to settle). Not
    those that speak sd_notify: the engine binds the socket they are told of (start.notify),
    and a READY=1 sent before that would be lost. Nor tasks: whether a `once=volume` one runs
    at all is the engine's to decide, from its stamp."""
    autostart = {spec.name for spec in catalogue.services if spec.autostart}
    return [spec for spec in catalogue.services
            if spec.autostart and not autostart.intersection(spec.after)
            and not needs_notify_socket(spec) and spec.task is None]


def spawn_first_wave(catalogue: Catalogue, base_env: dict[str, str]) -> dict[str, ChildProcess]:
    """Spawn the first wave; a service that cannot be spawned is left to the engine, which
    tries again and reports it as it would any failed spawn."""
    become_subreaper()  # first: what the first wave orphans must come to us (the engine asks too)
    pod_counter()  # the OOM kills counted before any spawn are not a service's (start.oomkill)
    spawned: dict[str, ChildProcess] = {}
    for spec in first_wave(catalogue):
        try:
            spawned[spec.name] = spawn(spec, base_env)
        except SpawnError:
            continue
    return spawned


def kill_unadopted(spawned: dict[str, ChildProcess]) -> None:
    """SIGKILL the process groups the engine never adopted (it failed before its boot), so
    that nothing runs unsupervised; the engine removes from `spawned` what it adopts."""
    for proc in spawned.values():
        proc.stop_signal(signal.SIGKILL)
    spawned.clear()
