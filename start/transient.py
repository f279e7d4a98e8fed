"""Transient services: what `podctl run` adds to a running pod, never to the catalogue.

A developer's dev server, database or tmux session started from an IDE terminal is a
descendant of the IDE's run, so it ends when Theia restarts (start.strays). Started with
`podctl run`, it is a child of the pod instead: a service with its own run and its own mark,
supervised, logged, measured and drained like the catalogue's, and kept by a reload.

It is built as the same frozen ServiceSpec, so the engine needs no second kind of service;
only its origin (a request over the control socket) and these defaults differ. They are
supervisord's, but for what suits a process a person started by hand:
- restarted when it crashes (a signal, or an exit other than 0) with the normal backoff, and
  left `exited` when it exits 0: it finished what it was asked to do;
- never critical (it must not make the pod unready) and without probes;
- run as the pod's user, in the pod's environment plus the request's variables only: nothing
  of the caller's environment reaches it.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Collection, Mapping

from healthz.model import RunRefused, RunRequest
from healthz.spec import HealthSpec
from start.catalogue import ServiceSpec
from start.strays import MARK

STARTSECS = 1.0  # supervisord's: a command that dies within it is reported as a failed start
STARTRETRIES = 3
STOPWAITSECS = 10.0
LOGFILE_MAXBYTES = 50 * 1024 * 1024  # supervisord's stdout_logfile_maxbytes and _backups
LOGFILE_BACKUPS = 10
PRIORITY = 999  # supervisord's default; only the catalogue's boot reads it
SOURCE = "podctl run"  # where the spec comes from, where a catalogue service names its file


def transient_spec(request: RunRequest, base_env: Mapping[str, str],
                   secrets: Collection[str] = ()) -> ServiceSpec:
    """The spec of the service `request` asks for; RunRefused when it could not even start.
    `secrets`: the catalogue's (`secrets=`), withheld from it as from every service that does
    not name them; a value the request gives itself (`--env`) is its own and stays."""
    if any(key == MARK for key, _ in request.environment):
        raise RunRefused(f"--env {MARK} is the pod's own: it says which run a process "
                         "belongs to")
    if not os.path.isdir(request.directory):
        raise RunRefused(f"no directory {request.directory} in the pod: give --directory")
    environment = {**base_env, **dict(request.environment)}
    program = request.argv[0]
    if "/" in program:
        path = os.path.join(request.directory, program)
        found = os.path.isfile(path) and os.access(path, os.X_OK)
    else:
        found = shutil.which(program, path=environment.get("PATH", os.defpath)) is not None
    if not found:
        where = "in " + request.directory if "/" in program else "on the pod's PATH"
        raise RunRefused(f"no executable {program!r} {where}")
    return ServiceSpec(
        name=request.name,
        argv=request.argv,
        environment=request.environment,
        directory=request.directory,
        uid=None,
        umask=None,
        priority=PRIORITY,
        autostart=False,
        autorestart="unexpected",
        startsecs=STARTSECS,
        startretries=STARTRETRIES,
        exitcodes=(0,),
        stopsignal=int(signal.SIGTERM),
        stopwaitsecs=STOPWAITSECS,
        redirect_stderr=False,
        logfile_maxbytes=LOGFILE_MAXBYTES,
        logfile_backups=LOGFILE_BACKUPS,
        # A developer's process, as theia's terminals are: the OOM killer's first choice.
        health=HealthSpec(critical=False, oom_score_adj=1000),
        source=SOURCE,
        program=request.name,
        transient=True,
        withheld=tuple(sorted(set(secrets) - {key for key, _ in request.environment})),
    )
