"""The lifecycle of one service as a pure function: `step(phase, spec, event, now)` returns the
next phase and the actions to carry out (docs/LIFECYCLE.md draws it).

Nothing here waits, reads a clock, touches a process or a file: `start.service.Service` turns
what happens (a spawn, an exit, a timer, a probe's verdict, a verb) into an `Event`, feeds it
here and carries out the returned `Action`s in order. So every rule of the lifecycle is in this
module, and each can be tested as a line of a table (tests/test_lifecycle.py).
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, dataclass_transform

from healthz.model import State

if TYPE_CHECKING:
    from start.catalogue import ServiceSpec

BACKOFF_BASE = 0.5  # seconds before the second restart in a row; doubles from there
BACKOFF_CAP = 30.0  # never wait longer than this between attempts, never stop trying
STABLE_RUN = 10.0  # a run at least this long (and past starting) resets the backoff
# Restarts an operator asked for: counted by reason, but never towards restart_budget, which
# exists so the kubelet replaces a container the engine cannot heal.
OPERATOR_REASONS = frozenset({"manual", "reload"})


# -- policy ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pacing:
    """How fast restarts come back (tests shrink it)."""

    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP
    stable_run: float = STABLE_RUN


PACING = Pacing()


def backoff_delay(failures_in_a_row: int, base: float = BACKOFF_BASE,
                  cap: float = BACKOFF_CAP) -> float:
    """0 for the first restart (a crash after a stable run comes back at once), then 0.5 s,
    1 s, 2 s … up to the cap: a crash loop never spins at full speed."""
    if failures_in_a_row <= 1:
        return 0.0
    return float(min(cap, base * 2 ** min(failures_in_a_row - 2, 32)))


def counts_towards_budget(reason: str) -> bool:
    """Crash, exit and liveness restarts use up restart_budget; an operator's do not."""
    return reason not in OPERATOR_REASONS


def over_budget(restart_times: Iterable[float], count: int, window: float, now: float) -> bool:
    """More than `count` restarts inside the last `window` seconds (restart_budget)."""
    return sum(1 for at in restart_times if at >= now - window) > count


def stable(ran: float, spec: ServiceSpec, pacing: Pacing) -> bool:
    """A run long enough to forget earlier failures (supervisord's startsecs, at least)."""
    return ran >= max(pacing.stable_run, spec.startsecs)


def has_ready_probe(spec: ServiceSpec) -> bool:
    """With one, passing it ends `starting`; without, startsecs does."""
    return spec.health.ready.kind != "none"


def is_task(spec: ServiceSpec) -> bool:
    """A one-shot task ([task:NAME]): `starting` until its exit, which decides everything."""
    return spec.task is not None


# -- phase ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """The process of the current run, from its spawn until it is reaped."""

    pid: int
    started: float  # on the clock `now` is on
    ready: bool = False  # readiness reached since this spawn
    extended_to: float = 0.0  # EXTEND_TIMEOUT_USEC moved start_timeout's end to this


@dataclass(frozen=True, slots=True)
class Halt:
    """A stop in progress: the stop signal is sent, SIGKILL comes at `kill_at`."""

    kill_at: float
    by_deadline: bool = False  # the drain's deadline, not stopwaitsecs, set kill_at
    failed_start: bool = False  # the kill of a start that timed out: its exit is a failed start


@dataclass(frozen=True, slots=True)
class Phase:
    """All the lifecycle knows of one service at one moment."""

    state: State = State.STOPPED
    reason: str = ""
    wanted: bool = False  # asked to run (start, restart, autostart) and not asked to stop
    run: Run | None = None
    halt: Halt | None = None  # set in STOPPING while the process lives
    settled: bool = False  # ready once, or gave up waiting: dependents may start (for good)
    settling: bool = False  # the SETTLE timer runs (from the first spawn attempt on)
    ever_ready: bool = False
    failed_starts: int = 0  # in a row, towards startretries
    failures_in_a_row: int = 0  # failed starts and crashes in a row: the backoff's exponent
    last_exit: str | None = None
    last_exit_code: int | None = None
    killed_at_deadline: bool = False  # the drain deadline, not stopwaitsecs, forced SIGKILL
    # A task that failed for good, or a service held back because something in its `after`
    # did: its own dependents are held back too, never started "anyway".
    failed: bool = False


# -- events and actions are values ----------------------------------------------------------


@dataclass_transform(frozen_default=True)
class _Fields(type):
    """Makes a class's annotations its fields, held in slots (their defaults kept aside)."""

    def __new__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, object]
                ) -> _Fields:
        annotations = namespace.get("__annotations__", {})
        # `Value` itself has none (its annotations are class variables), its subclasses do.
        fields = tuple(annotations) if bases and isinstance(annotations, dict) else ()
        namespace["_defaults"] = {field: namespace.pop(field) for field in fields
                                  if field in namespace}
        namespace["__slots__"] = namespace["__match_args__"] = namespace["_fields"] = fields
        return super().__new__(cls, name, bases, namespace)


class Value(metaclass=_Fields):
    """A frozen, slotted value whose fields are its annotations: a frozen dataclass for mypy
    and for whoever reads it, but defined in microseconds. A dataclass takes ~0.4 ms to define
    on Python 3.11; the ~30 events and actions below would add ~12 ms to the engine's import,
    which is on the boot's path (the phase itself is a dataclass: `replace` works on it)."""

    _fields: ClassVar[tuple[str, ...]]
    _defaults: ClassVar[dict[str, object]]

    def __init__(self, *args: object, **kwargs: object) -> None:
        if len(args) > len(self._fields) or not kwargs.keys() <= set(self._fields[len(args):]):
            raise TypeError(f"{type(self).__name__}{args + tuple(kwargs.items())}: no such field")
        given = dict(zip(self._fields, args, strict=False)) | kwargs
        for name in self._fields:
            if name not in given and name not in self._defaults:
                raise TypeError(f"{type(self).__name__}: {name} is missing")
            object.__setattr__(self, name, given.get(name, self._defaults.get(name)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(
            self._fields, self._values(), strict=True))
        return f"{type(self).__name__}({shown})"


# -- events ---------------------------------------------------------------------------------


class Start(Value):
    """Run it (again); `waiting`: dependencies that have not settled yet."""

    waiting: tuple[str, ...] = ()


class Stop(Value):
    """Stop it; with a `deadline` (a drain), SIGKILL no later than that."""

    deadline: float | None = None


class Restart(Value):
    """Stop it and run it again, counted under `reason` (manual, reload, liveness)."""

    reason: str
    waiting: tuple[str, ...] = ()


class DependenciesSettled(Value):
    """What it waited for has settled; `late`: those that never got ready; `failed`: tasks
    that failed (or what they held back), each as "seed failed (exit 3)": it must not start."""

    late: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


class Spawned(Value):
    pid: int
    at: float


class SpawnFailed(Value):
    error: str


class StartsecsElapsed(Value):
    """The STARTSECS timer: the run lived `startsecs` (services without a ready probe)."""


class StartTimedOut(Value):
    """The START_TIMEOUT timer: not ready within start_timeout of the spawn."""


class SettleTimedOut(Value):
    """The SETTLE timer: start_timeout since the first attempt, across restarts."""


class ReadyPassed(Value):
    """The service is ready by its probe's verdict (or by being RUNNING, without one)."""


class LivenessFailed(Value):
    """A liveness probe failed, `failures` times in a row."""

    failures: int
    reason: str


class Exited(Value):
    """The run's process was reaped."""

    status: str  # "exit 1", "killed by SIGTERM"
    code: int
    ran: float  # seconds


class BackoffElapsed(Value):
    """The BACKOFF timer: time to try again."""


class KillDue(Value):
    """The KILL timer: stopwaitsecs (or the drain's deadline) passed and it still runs."""


class DrainKill(Value):
    """The drain's deadline passed: SIGKILL now, and never again wanted."""


class StartExtended(Value):
    """The service asked for more time to get ready (sd_notify's EXTEND_TIMEOUT_USEC)."""

    seconds: float


class WatchdogKicked(Value):
    """The service said it is alive (sd_notify's WATCHDOG=1)."""


class WatchdogMissed(Value):
    """The WATCHDOG timer: no WATCHDOG=1 within `watchdog` (or the service said
    WATCHDOG=trigger)."""


Event = (Start | Stop | Restart | DependenciesSettled | Spawned | SpawnFailed | StartsecsElapsed
         | StartTimedOut | SettleTimedOut | ReadyPassed | LivenessFailed | Exited
         | BackoffElapsed | KillDue | DrainKill | StartExtended | WatchdogKicked
         | WatchdogMissed)
EVENTS: tuple[type[Event], ...] = (
    Start, Stop, Restart, DependenciesSettled, Spawned, SpawnFailed, StartsecsElapsed,
    StartTimedOut, SettleTimedOut, ReadyPassed, LivenessFailed, Exited, BackoffElapsed, KillDue,
    DrainKill, StartExtended, WatchdogKicked, WatchdogMissed)


# -- actions --------------------------------------------------------------------------------


class Timer(enum.Enum):
    """A service's timers; each fires the event of the same name (LEFTOVERS: see Spawn)."""

    STARTSECS = "startsecs"
    START_TIMEOUT = "start_timeout"
    SETTLE = "settle"
    BACKOFF = "backoff"
    KILL = "kill"
    LEFTOVERS = "leftovers"
    WATCHDOG = "watchdog"


class Spawn(Value):
    """Spawn a process (then feed Spawned or SpawnFailed). While the last run's group is not
    empty yet, the spawn waits for it on the LEFTOVERS timer."""


class StartProbes(Value):
    pass


class StopProbes(Value):
    pass


class SignalGroup(Value):
    signum: int


class Arm(Value):
    timer: Timer
    delay: float


class Disarm(Value):
    timer: Timer


class Emit(Value):
    """An event in the supervisor's log (the service's name is added)."""

    name: str
    fields: tuple[tuple[str, object], ...] = ()
    level: str = "info"


class CountRestart(Value):
    reason: str


class Settle(Value):
    """Dependents may start now (ready, or gave up waiting)."""


class AwaitDependencies(Value):
    """Feed DependenciesSettled once each of `names` has settled."""

    names: tuple[str, ...]


class CancelWait(Value):
    pass


class MarkDone(Value):
    """A task succeeded: write its stamp (`once=volume`), so later boots skip it."""


Action = (Spawn | StartProbes | StopProbes | SignalGroup | Arm | Disarm | Emit | CountRestart
          | Settle | AwaitDependencies | CancelWait | MarkDone)
Actions = tuple[Action, ...]


def emit(name: str, *, level: str = "info", **fields: object) -> Emit:
    return Emit(name, tuple(fields.items()), level)


# -- the transition function ----------------------------------------------------------------

# Pairs that change nothing, whatever the rest of the phase (each is a timer already disarmed,
# a probe of a run that ended, or a verb that is already done).
_IGNORED_PAIRS: set[tuple[State, type[Event]]] = (
    {(state, event) for state in State if state not in (State.STARTING, State.RUNNING,
                                                        State.STOPPING)
     for event in (StartsecsElapsed, StartTimedOut, ReadyPassed, LivenessFailed, Exited,
                   KillDue, DrainKill)}
    | {(state, DependenciesSettled) for state in State if state is not State.WAITING}
    | {(state, BackoffElapsed) for state in State if state not in (State.BACKOFF, State.FATAL)}
    | {(State.STARTING, Spawned), (State.RUNNING, Spawned), (State.STARTING, SpawnFailed),
       (State.RUNNING, SpawnFailed), (State.EXITED, SettleTimedOut),
       (State.RUNNING, StartsecsElapsed), (State.STOPPING, StartsecsElapsed),
       (State.RUNNING, StartTimedOut), (State.STOPPING, StartTimedOut),
       (State.RUNNING, ReadyPassed), (State.STOPPING, ReadyPassed),
       (State.STOPPING, LivenessFailed), (State.STARTING, KillDue), (State.RUNNING, KillDue)})
# What the service tells of itself (sd_notify) matters while it starts or runs; a stop is not
# extended and a watchdog does not restart what is being stopped.
_TOLD: tuple[type[Event], ...] = (WatchdogKicked, WatchdogMissed, StartExtended)
_IGNORED_PAIRS |= {(state, told) for state in State for told in _TOLD
                   if state not in (State.STARTING, State.RUNNING)}
_IGNORED_PAIRS |= {(State.RUNNING, told) for told in _TOLD if told is StartExtended}
IGNORED: frozenset[tuple[State, type[Event]]] = frozenset(_IGNORED_PAIRS)


def step(phase: Phase, spec: ServiceSpec, event: Event, now: float,
         pacing: Pacing = PACING) -> tuple[Phase, Actions]:
    """The phase after `event` at `now`, and what to do about it, in order."""
    if (phase.state, type(event)) in IGNORED:
        return phase, ()
    match event:
        case Start(waiting):
            return _start(phase, spec, waiting)
        case Stop(deadline):
            return _stop(phase, spec, deadline, now)
        case Restart(reason, waiting):
            counted: Actions = (CountRestart(reason),)
            if phase.run is None:
                after, actions = _start(phase, spec, waiting)
                return after, counted + actions
            after, actions = _begin_stop(replace(phase, wanted=True), spec, None, now)
            return after, counted + actions
        case DependenciesSettled(late, holding_back):
            if phase.state is not State.WAITING or not phase.wanted:
                return phase, ()
            if holding_back:
                return _held_back(phase, spec, holding_back)
            said: Actions = (emit("starting_anyway", level="warning", service=spec.name,
                                  not_ready=list(late)),) if late else ()
            after, actions = _spawn(phase, spec)
            return after, said + actions
        case Spawned(pid, at):
            if phase.run is not None:
                return phase, ()
            return _spawned(phase, spec, pid, at)
        case SpawnFailed(error):
            if phase.run is not None:
                return phase, ()
            failed = replace(phase, last_exit=f"spawn failed: {error}", last_exit_code=None)
            if is_task(spec):
                after, actions = _task_ended(failed, spec, f"spawn failed: {error}", None, pacing)
            else:
                after, actions = _failed_start(failed, spec, f"spawn failed: {error}", pacing)
            return after, (emit("spawn_failed", level="error", service=spec.name, error=error),
                           *actions)
        case StartsecsElapsed():
            if phase.state is not State.STARTING or phase.run is None or has_ready_probe(spec):
                return phase, ()
            return _become_ready(replace(phase, state=State.RUNNING, reason=""), spec)
        case StartTimedOut():
            return _start_timed_out(phase, spec, now)
        case SettleTimedOut():
            if phase.settled:
                return phase, ()
            return replace(phase, settled=True, settling=False), (
                emit("not_ready_in_time", level="warning", service=spec.name,
                     seconds=spec.health.start_timeout),
                Settle())
        case ReadyPassed():
            if (phase.state not in (State.STARTING, State.RUNNING) or phase.run is None
                    or phase.run.ready):
                return phase, ()
            return _become_ready(phase, spec)
        case LivenessFailed(failures, reason):
            return _liveness_failed(phase, spec, failures, reason, now)
        case Exited(status, code, ran):
            if phase.run is None:
                return phase, ()
            return _exited(phase, spec, status, code, ran, pacing)
        case BackoffElapsed():
            if phase.state not in (State.BACKOFF, State.FATAL) or not phase.wanted:
                return phase, ()
            return _spawn(phase, spec)
        case KillDue():
            if phase.state is not State.STOPPING or phase.run is None or phase.halt is None:
                return phase, ()
            cause = "drain deadline" if phase.halt.by_deadline else "stopwaitsecs"
            return replace(phase, killed_at_deadline=phase.killed_at_deadline
                           or phase.halt.by_deadline), (
                emit("killed", level="warning", service=spec.name, pid=phase.run.pid,
                     cause=cause),
                SignalGroup(signal.SIGKILL))
        case DrainKill():
            if phase.run is None:
                return phase, ()
            return replace(phase, wanted=False, killed_at_deadline=True), (
                SignalGroup(signal.SIGKILL),)
        case StartExtended(seconds):
            return _extend_start(phase, spec, seconds, now)
        case WatchdogKicked():
            if spec.health.watchdog is None or phase.run is None:
                return phase, ()
            return phase, (Arm(Timer.WATCHDOG, spec.health.watchdog),)
        case WatchdogMissed():
            return _watchdog_missed(phase, spec, now)
    raise AssertionError(f"unknown event {event!r}")  # pragma: no cover (exhaustive match)


def _start(phase: Phase, spec: ServiceSpec, waiting: tuple[str, ...]) -> tuple[Phase, Actions]:
    phase = replace(phase, wanted=True, failed_starts=0, failed=False)
    if phase.state in (State.STARTING, State.RUNNING, State.STOPPING):
        return phase, ()  # STOPPING: the exit spawns again, since it is wanted
    cancel: Actions = (CancelWait(),) if phase.state is State.WAITING else ()
    if not waiting:
        after, actions = _spawn(phase, spec)
        return after, cancel + actions
    # No spawn may be left pending (on BACKOFF or LEFTOVERS): it would not wait for `after`.
    return replace(phase, state=State.WAITING, reason="waiting for " + ", ".join(waiting)), (
        *cancel, Disarm(Timer.BACKOFF), Disarm(Timer.LEFTOVERS), AwaitDependencies(waiting))


def _spawn(phase: Phase, spec: ServiceSpec) -> tuple[Phase, Actions]:
    actions: list[Action] = [Disarm(Timer.BACKOFF)]
    # A task's dependents wait for its success however long it takes: no SETTLE timer.
    if not phase.settled and not phase.settling and not is_task(spec):
        # Dependents wait at most start_timeout from the first attempt, across restarts:
        # each spawn's own timer dies with a process that never lives that long.
        actions.append(Arm(Timer.SETTLE, spec.health.start_timeout))
        phase = replace(phase, settling=True)
    actions.append(Spawn())
    return phase, tuple(actions)


def _spawned(phase: Phase, spec: ServiceSpec, pid: int, at: float) -> tuple[Phase, Actions]:
    phase = replace(phase, state=State.STARTING, reason="", run=Run(pid, at), halt=None)
    actions: Actions = (emit("spawned", service=spec.name, pid=pid), StartProbes())
    if spec.task is not None:  # no probes, no startsecs: `starting` lasts until the exit
        timeout = spec.task.timeout
        return phase, (emit("spawned", service=spec.name, pid=pid),
                       *((Arm(Timer.START_TIMEOUT, timeout),) if timeout is not None else ()))
    if spec.health.watchdog is not None:  # as systemd: the first WATCHDOG=1 is due from the spawn
        actions = (*actions, Arm(Timer.WATCHDOG, spec.health.watchdog))
    if has_ready_probe(spec):  # its verdict ends `starting`; startsecs plays no part
        return phase, (*actions, Arm(Timer.START_TIMEOUT, spec.health.start_timeout))
    if spec.startsecs > 0:
        return phase, (*actions, Arm(Timer.STARTSECS, spec.startsecs))
    after, more = _become_ready(replace(phase, state=State.RUNNING), spec)
    return after, actions + more


def _become_ready(phase: Phase, spec: ServiceSpec) -> tuple[Phase, Actions]:
    """Ready for the first time since the spawn: `starting` is over, dependents may start.
    Without a ready probe, a RUNNING service is ready; with one, only its verdict says so."""
    assert phase.run is not None
    became = replace(phase, state=State.RUNNING, reason="", run=replace(phase.run, ready=True),
                     ever_ready=True, settled=True, settling=False)
    return became, (Disarm(Timer.START_TIMEOUT), Disarm(Timer.SETTLE), Settle(),
                    emit("ready", service=spec.name))


def _start_timed_out(phase: Phase, spec: ServiceSpec, now: float) -> tuple[Phase, Actions]:
    if phase.state is not State.STARTING or phase.run is None or phase.run.ready:
        return phase, ()
    if spec.task is not None and spec.task.timeout is not None:
        # Killed as any stop kills (its group, then what left it carrying its run's mark);
        # the exit that follows is a failed attempt, retried or final (_task_ended).
        seconds = spec.task.timeout
        late = replace(phase, reason=f"timed out after {seconds:g}s")
        after, actions = _begin_stop(late, spec, None, now, keep_reason=True, failed_start=True)
        return after, (emit("task_timed_out", level="warning", service=spec.name,
                            seconds=seconds), *actions)
    timeout = spec.health.start_timeout
    timed_out = replace(phase, reason=f"not ready within start_timeout ({timeout:g}s)",
                        settled=True, settling=False)
    # Dependents start anyway: a broken dependency never blocks the pod.
    said: Actions = (emit("start_timeout", level="warning", service=spec.name, seconds=timeout),
                     Settle(), Disarm(Timer.SETTLE))
    after, actions = _begin_stop(timed_out, spec, None, now, keep_reason=True, failed_start=True)
    return after, said + actions


def _extend_start(phase: Phase, spec: ServiceSpec, seconds: float,
                  now: float) -> tuple[Phase, Actions]:
    run = phase.run
    if phase.state is not State.STARTING or run is None or run.ready or not has_ready_probe(spec):
        return phase, ()  # without a ready probe startsecs ends starting: nothing to extend
    ends = max(run.started + spec.health.start_timeout, run.extended_to)
    if now + seconds <= ends:
        return phase, ()  # systemd's rule too: an extension never shortens the window
    extended = replace(phase, run=replace(run, extended_to=now + seconds))
    # Its dependents wait as long: they start once it is ready, not before.
    settle: Actions = (Arm(Timer.SETTLE, seconds),) if phase.settling else ()
    return extended, (emit("start_extended", service=spec.name, seconds=seconds),
                      Arm(Timer.START_TIMEOUT, seconds), *settle)


def _watchdog_missed(phase: Phase, spec: ServiceSpec, now: float) -> tuple[Phase, Actions]:
    watchdog = spec.health.watchdog
    if watchdog is None or phase.run is None:
        return phase, ()
    # No startup window: the service was told WATCHDOG_USEC at its spawn, as systemd does.
    failing = replace(phase, wanted=True, reason=f"watchdog: no WATCHDOG=1 in {watchdog:g}s")
    after, actions = _begin_stop(failing, spec, None, now, keep_reason=True)
    return after, (emit("watchdog_missed", level="warning", service=spec.name,
                        seconds=watchdog),
                   CountRestart("liveness"), *actions)


def _liveness_failed(phase: Phase, spec: ServiceSpec, failures: int, reason: str,
                     now: float) -> tuple[Phase, Actions]:
    run = phase.run
    if phase.state not in (State.STARTING, State.RUNNING) or run is None:
        return phase, ()
    # The startup window: before the first ready, within start_timeout, a failing liveness
    # probe is a service still coming up.
    in_window = not run.ready and now - run.started < spec.health.start_timeout
    if in_window or failures < spec.health.failures:
        return phase, ()
    said = (emit("liveness_failed", level="warning", service=spec.name, failures=failures),
            CountRestart("liveness"))
    failing = replace(phase, wanted=True,
                      reason=f"liveness probe failed {failures} times: {reason}")
    after, actions = _begin_stop(failing, spec, None, now)
    return after, said + actions


def _stop(phase: Phase, spec: ServiceSpec, deadline: float | None,
          now: float) -> tuple[Phase, Actions]:
    actions: list[Action] = [Disarm(Timer.BACKOFF), Disarm(Timer.LEFTOVERS),
                             Disarm(Timer.SETTLE)]
    if phase.state is State.WAITING:
        actions.append(CancelWait())
    phase = replace(phase, wanted=False, settling=False)
    if phase.run is None:
        if phase.state is not State.EXITED:
            phase = replace(phase, state=State.STOPPED, reason="", halt=None)
        return replace(phase, settled=True), (*actions, Settle())
    after, more = _begin_stop(phase, spec, deadline, now)
    return after, (*actions, *more)


def _begin_stop(phase: Phase, spec: ServiceSpec, deadline: float | None, now: float,
                keep_reason: bool = False, failed_start: bool = False) -> tuple[Phase, Actions]:
    assert phase.run is not None
    grace = spec.stopwaitsecs
    by_deadline = deadline is not None and deadline - now < grace
    if deadline is not None and by_deadline:
        grace = max(0.0, deadline - now)
    if phase.state is not State.STOPPING or phase.halt is None:
        stopping = replace(phase, state=State.STOPPING,
                           reason=phase.reason if keep_reason else "",
                           halt=Halt(now + grace, by_deadline, failed_start))
        return stopping, (
            emit("stopping", service=spec.name, pid=phase.run.pid,
                 signal=signal.Signals(spec.stopsignal).name),
            SignalGroup(spec.stopsignal),
            SignalGroup(signal.SIGCONT),  # a stopped (hung) process must see the signal
            Arm(Timer.KILL, grace))
    if by_deadline and phase.halt.kill_at > now + grace:
        # Already stopping (e.g. a restart) when the drain began: the earlier SIGKILL wins.
        return replace(phase, halt=replace(phase.halt, kill_at=now + grace, by_deadline=True)), (
            Arm(Timer.KILL, grace),)
    return phase, ()


def _exited(phase: Phase, spec: ServiceSpec, status: str, code: int, ran: float,
            pacing: Pacing) -> tuple[Phase, Actions]:
    assert phase.run is not None
    was, halt, pid = phase.state, phase.halt, phase.run.pid
    failed_start = halt is not None and halt.failed_start
    phase = replace(phase, run=None, halt=None, last_exit=status, last_exit_code=code)
    # A task's attempts all count towards its retries, however long each ran.
    if was is not State.STARTING and stable(ran, spec, pacing) and not is_task(spec):
        phase = replace(phase, failures_in_a_row=0, failed_starts=0)
    watchdog: Actions = (Disarm(Timer.WATCHDOG),) if spec.health.watchdog is not None else ()
    done: Actions = (Disarm(Timer.STARTSECS), Disarm(Timer.START_TIMEOUT), Disarm(Timer.KILL),
                     *watchdog, StopProbes(),
                     emit("exited", service=spec.name, pid=pid, status=status,
                          ran_seconds=round(ran, 3)))
    if was is State.STOPPING and not failed_start:
        if phase.wanted:  # a restart: come back at once
            after, actions = _spawn(phase, spec)
            return after, done + actions
        return replace(phase, state=State.STOPPED, reason="", settled=True), (*done, Settle())
    if is_task(spec):
        if code == 0 and not failed_start:
            return replace(phase, state=State.EXITED, reason="", wanted=False, settled=True,
                           ever_ready=True, failed_starts=0, failures_in_a_row=0), (
                *done, Settle(), MarkDone(), emit("task_succeeded", service=spec.name))
        why = phase.reason if failed_start and phase.reason else status
        after, actions = _task_ended(phase, spec, why, code, pacing)
        return after, done + actions
    if was is State.STARTING or failed_start:
        before = "before its readiness probe passed" if has_ready_probe(spec) else \
            f"before startsecs ({spec.startsecs:g}s)"
        after, actions = _failed_start(phase, spec, phase.reason or f"{status} {before}", pacing)
        return after, done + actions
    after, actions = _after_running_exit(phase, spec, status, code, pacing)
    return after, done + actions


def _task_ended(phase: Phase, spec: ServiceSpec, why: str, code: int | None,
                pacing: Pacing) -> tuple[Phase, Actions]:
    """A task's attempt failed (an exit other than 0, a timeout, a failed spawn): tried again
    up to `retries` times (its startretries), then final: FATAL and not retried, its
    dependents held back. (Its exit 0 is handled in _exited: success, for this boot.)"""
    phase = replace(phase, failed_starts=phase.failed_starts + 1,
                    failures_in_a_row=phase.failures_in_a_row + 1)
    if phase.wanted and phase.failed_starts <= spec.startretries:
        return _schedule_restart(phase, spec, "crash", _delay(phase, pacing), State.BACKOFF,
                                 why)
    attempts = phase.failed_starts
    final = f"{why}; failed {attempts} time{'s' if attempts > 1 else ''}, not retried"
    return replace(phase, state=State.FATAL, reason=final, wanted=False, settled=True,
                   failed=True), (
        Settle(), emit("task_failed", level="error", service=spec.name, exit_code=code,
                       reason=final))


def _held_back(phase: Phase, spec: ServiceSpec,
               failed: tuple[str, ...]) -> tuple[Phase, Actions]:
    """Something it runs after failed for good: it is not started (a pod that seeds nothing
    must not serve as if it had), and says which and why; its dependents are held back too."""
    reason = "not started: " + ", ".join(failed)
    return replace(phase, state=State.FATAL, reason=reason, wanted=False, settled=True,
                   failed=True), (
        Settle(), emit("dependency_failed", level="error", service=spec.name,
                       failed=list(failed)))


def _failed_start(phase: Phase, spec: ServiceSpec, reason: str,
                  pacing: Pacing) -> tuple[Phase, Actions]:
    phase = replace(phase, failed_starts=phase.failed_starts + 1,
                    failures_in_a_row=phase.failures_in_a_row + 1)
    if not phase.wanted:
        return replace(phase, state=State.STOPPED, reason=reason), ()
    if phase.failed_starts > spec.startretries:
        cap = pacing.backoff_cap
        return _schedule_restart(phase, spec, "crash", cap, State.FATAL,
                                 f"{reason}; failed to start {phase.failed_starts} times in a "
                                 f"row, retrying every {cap:g}s")
    return _schedule_restart(phase, spec, "crash", _delay(phase, pacing), State.BACKOFF, reason)


def _after_running_exit(phase: Phase, spec: ServiceSpec, status: str, code: int,
                        pacing: Pacing) -> tuple[Phase, Actions]:
    expected = code in spec.exitcodes
    policy = spec.autorestart
    if not phase.wanted or policy == "false" or (policy == "unexpected" and expected):
        reason = "" if expected else f"{status} (not restarted: autorestart={policy})"
        return replace(phase, state=State.EXITED, reason=reason, wanted=False, settled=True), (
            Settle(),)
    phase = replace(phase, failures_in_a_row=phase.failures_in_a_row + 1)
    return _schedule_restart(phase, spec, "exit" if expected else "crash",
                             _delay(phase, pacing), State.BACKOFF, status)


def _schedule_restart(phase: Phase, spec: ServiceSpec, reason: str, delay: float, state: State,
                      why: str) -> tuple[Phase, Actions]:
    phase = replace(phase, state=state, reason=why)
    actions: Actions = (CountRestart(reason),
                        emit("backoff", level="warning" if state is State.BACKOFF else "error",
                             service=spec.name, delay_seconds=delay, reason=why))
    if delay <= 0:
        after, more = _spawn(phase, spec)
        return after, actions + more
    return phase, (*actions, Arm(Timer.BACKOFF, delay))


def _delay(phase: Phase, pacing: Pacing) -> float:
    return backoff_delay(phase.failures_in_a_row, pacing.backoff_base, pacing.backoff_cap)
