"""`[task:NAME]`: a one-shot task, read into the same frozen ServiceSpec as a program.

A task runs to completion once per boot (`once=boot`) or once per volume (`once=volume`, see
start.taskstamp), in `after` order like services; services that name it in their `after`
start only after its exit 0 (start.lifecycle). supervisord has no such section, so its keys
are ours, but the ones it shares with `[program:x]` (command, directory, environment, user)
are read with supervisor's own converters (through `program`, the one module that touches
the library) and mean what they mean there.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from healthz.durations import parse_duration
from healthz.names import RULE, is_service_name
from healthz.spec import HealthSpec
from healthz.spelling import did_you_mean
from start.catalogue import program as program_
from start.catalogue.spec import ServiceSpec, TaskSpec

TASK_KEYS = frozenset({"command", "directory", "environment", "user", "after", "timeout",
                       "retries", "once", "critical"})
ONCE = ("boot", "volume")
DEFAULT_TIMEOUT = 300.0  # seconds: a seed that hangs must not hold the pod back for ever
MAX_RETRIES = 100
# Fixed, as a transient service's are: a timed-out task gets SIGTERM, then SIGKILL.
STOPWAITSECS = 5.0
LOGFILE_MAXBYTES = 50 * 1024 * 1024  # supervisord's stdout_logfile_maxbytes and _backups
LOGFILE_BACKUPS = 10
PRIORITY = 999  # supervisord's default; `after` is what orders a task

ProblemSink = Callable[[tuple[str | None, str]], None]  # (key, message)


@dataclass
class Task:
    """What one section gave: the spec (None when it has problems), and each (key, problem)."""

    spec: ServiceSpec | None = None
    problems: list[tuple[str | None, str]] = field(default_factory=list)


def read_task(name: str, items: Mapping[str, str], names: Mapping[str, object],
              pod_environment: Mapping[str, str], source: str) -> Task:
    """The task `name` from its section's raw `items`; `names`: the %(…)s expansions."""
    result = Task()
    problem = result.problems.append
    if not is_service_name(name):
        problem((None, f"{name!r} cannot name a task: use {RULE}"))
        return result
    values: dict[str, str] = {}
    for key, raw in items.items():
        if key not in TASK_KEYS:
            problem((key, "unknown key" + did_you_mean(key, TASK_KEYS)
                     + f"; a task takes {', '.join(sorted(TASK_KEYS))}"))
            continue
        if (too_long := program_.value_too_long(key, raw)) is not None:
            problem((key, too_long))
            continue
        try:
            values[key] = program_.expand(raw, names)
        except ValueError as error:
            problem((key, str(error)))
    argv = _command(values.get("command"), problem)
    environment = dict(pod_environment)
    uid = None
    timeout: float | None = DEFAULT_TIMEOUT
    retries = 0
    critical = True
    try:
        if "environment" in values:
            environment.update(program_.key_value_pairs(values["environment"]))
    except ValueError as error:
        problem(("environment", str(error)))
    try:
        if "user" in values:
            uid = program_.user_id(values["user"])
    except ValueError as error:
        problem(("user", f"{error}; name a user of the pod"))
    if "timeout" in values:
        timeout = _timeout(values["timeout"], problem)
    if (once := values.get("once", "boot").strip()) not in ONCE:
        problem(("once", f"{once!r}: expected boot (every boot) or volume (until it "
                 "succeeded once on this $CODITECT_HOME)"))
    if "retries" in values:
        text = values["retries"].strip()
        if not text.isascii() or not text.isdigit() or int(text) > MAX_RETRIES:
            problem(("retries", f"{text!r}: expected a whole number from 0 to {MAX_RETRIES}"))
        else:
            retries = int(text)
    if "critical" in values:
        try:
            critical = program_.truth(values["critical"].strip())
        except ValueError:
            problem(("critical", f"{values['critical']!r}: expected true or false"))
    after = tuple(word for word in values.get("after", "").replace(",", " ").split() if word)
    if result.problems or argv is None:
        return result
    result.spec = ServiceSpec(
        name=name, argv=argv, environment=tuple(sorted(environment.items())),
        directory=values.get("directory") or None, uid=uid, umask=None, priority=PRIORITY,
        autostart=True, autorestart="false", startsecs=0.0, startretries=retries,
        exitcodes=(0,), stopsignal=int(signal.SIGTERM), stopwaitsecs=STOPWAITSECS,
        redirect_stderr=False, logfile_maxbytes=LOGFILE_MAXBYTES,
        logfile_backups=LOGFILE_BACKUPS, health=HealthSpec(after=after, critical=critical),
        source=source, program=name, task=TaskSpec(timeout=timeout, once=once))
    return result


def _command(text: str | None, problem: ProblemSink) -> tuple[str, ...] | None:
    if text is None:
        problem(("command", "missing; a task needs the command it runs"))
        return None
    try:
        argv = tuple(shlex.split(text))
    except ValueError as error:
        problem(("command", f"cannot split it: {error}"))
        return None
    if not argv:
        problem(("command", "empty"))
        return None
    return argv


def _timeout(text: str, problem: ProblemSink) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        problem(("timeout", f"{error}, or none"))
        return DEFAULT_TIMEOUT
    if seconds <= 0:
        problem(("timeout", "0: give a duration above 0, or none (no limit)"))
    return seconds
