"""The lifecycle of one service as a table: (phase, event) → (phase, actions), with no process,
no loop and no clock. Every state-and-event pair is in the table or declared ignored
(`start.lifecycle.IGNORED`), and docs/LIFECYCLE.md's diagram is this table's edges."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, replace

import pytest

from healthz.model import State
from healthz.probe_spec import parse_probe
from healthz.spec import HealthSpec
from start.catalogue import ServiceSpec, TaskSpec
from start.lifecycle import (
    EVENTS,
    IGNORED,
    Actions,
    Arm,
    AwaitDependencies,
    BackoffElapsed,
    CancelWait,
    CountRestart,
    DependenciesSettled,
    Disarm,
    DrainKill,
    Emit,
    Event,
    Exited,
    Halt,
    KillDue,
    LivenessFailed,
    MarkDone,
    Phase,
    ReadyPassed,
    Restart,
    Run,
    Settle,
    SettleTimedOut,
    SignalGroup,
    Spawn,
    Spawned,
    SpawnFailed,
    Start,
    StartExtended,
    StartProbes,
    StartsecsElapsed,
    StartTimedOut,
    Stop,
    StopProbes,
    Timer,
    WatchdogKicked,
    WatchdogMissed,
    counts_towards_budget,
    emit,
    over_budget,
    step,
)
from tests.support import ROOT

NOW = 100.0
PID = 42
SPEC = ServiceSpec(
    name="svc", argv=("svc",), environment=(), directory=None, uid=None, umask=None,
    priority=999, autostart=True, autorestart="unexpected", startsecs=1.0, startretries=3,
    exitcodes=(0,), stopsignal=signal.SIGTERM, stopwaitsecs=10.0, redirect_stderr=False,
    logfile_maxbytes=1024, logfile_backups=1, health=HealthSpec(start_timeout=60.0, failures=3),
    source="svc.conf")
PROBED = replace(SPEC, health=replace(SPEC.health, ready=parse_probe("tcp://127.0.0.1:8000"),
                                      live=parse_probe("tcp://127.0.0.1:8000")))
INSTANT = replace(SPEC, startsecs=0.0)  # no probe, no startsecs: RUNNING at the spawn
ALWAYS = replace(SPEC, autorestart="true")
NEVER = replace(SPEC, autorestart="false")
# Ready when it says so (sd_notify), alive while it keeps saying WATCHDOG=1 every 10 s.
NOTIFYING = replace(SPEC, health=replace(SPEC.health, ready=parse_probe("notify"),
                                         watchdog=10.0))

# A one-shot task ([task:NAME]): one retry, killed after 30 s.
TASK = replace(SPEC, autorestart="false", startsecs=0.0, startretries=1,
               task=TaskSpec(timeout=30.0))

# One phase of each kind, as the engine reaches it.
FRESH = Phase()  # never asked to run
WANTED = Phase(wanted=True, settling=True)  # a spawn asked for, not done yet (leftovers)
WAITING = Phase(State.WAITING, "waiting for db", wanted=True)
STARTING = Phase(State.STARTING, wanted=True, run=Run(PID, 99.5), settling=True)
RUNNING = Phase(State.RUNNING, wanted=True, run=Run(PID, 50.0, ready=True), settled=True,
                ever_ready=True)
BACKOFF = Phase(State.BACKOFF, "exit 1", wanted=True, settled=True, ever_ready=True,
                failures_in_a_row=2, last_exit="exit 1", last_exit_code=1)
FATAL = Phase(State.FATAL, "exit 2; failed to start 4 times", wanted=True, failed_starts=4,
              failures_in_a_row=4, last_exit="exit 2", last_exit_code=2)
STOPPING = Phase(State.STOPPING, run=Run(PID, 50.0, ready=True), halt=Halt(110.0),
                 settled=True, ever_ready=True)
RESTARTING = replace(STOPPING, wanted=True)
RESPAWNING = Phase(State.STOPPING, wanted=True, settled=True, ever_ready=True)  # exited
TIMING_OUT = Phase(State.STOPPING, "not ready within start_timeout (60s)", wanted=True,
                   run=Run(PID, 40.0), halt=Halt(110.0, failed_start=True), settled=True)
EXITED = Phase(State.EXITED, settled=True, ever_ready=True, last_exit="exit 0",
               last_exit_code=0)
STOPPED = Phase(settled=True, ever_ready=True)


def said(name: str, level: str = "info", **fields: object) -> Emit:
    """What the service logs: its name first, then the event's own fields."""
    return emit(name, level=level, service="svc", **fields)


def spawning(settle: bool = False) -> Actions:
    """A spawn; the first attempt since the last settle also starts the SETTLE timer."""
    return (Disarm(Timer.BACKOFF), *((Arm(Timer.SETTLE, 60.0),) if settle else ()), Spawn())


def stopping(grace: float = 10.0) -> Actions:
    return (said("stopping", pid=PID, signal="SIGTERM"), SignalGroup(signal.SIGTERM),
            SignalGroup(signal.SIGCONT), Arm(Timer.KILL, grace))


def exiting(status: str, ran: float) -> Actions:
    return (Disarm(Timer.STARTSECS), Disarm(Timer.START_TIMEOUT), Disarm(Timer.KILL),
            StopProbes(), said("exited", pid=PID, status=status, ran_seconds=ran))


def backoff(reason: str, why: str, delay: float, level: str = "warning") -> Actions:
    later: Actions = (Arm(Timer.BACKOFF, delay),) if delay > 0 else spawning()
    return (CountRestart(reason), said("backoff", level, delay_seconds=delay, reason=why), *later)


READY: Actions = (Disarm(Timer.START_TIMEOUT), Disarm(Timer.SETTLE), Settle(), said("ready"))
STOP_NOW: Actions = (Disarm(Timer.BACKOFF), Disarm(Timer.LEFTOVERS), Disarm(Timer.SETTLE))
SPAWNED: Actions = (said("spawned", pid=PID), StartProbes())
NEW_RUN = Run(PID, NOW)


@dataclass(frozen=True)
class Row:
    why: str
    phase: Phase
    event: Event
    after: Phase
    actions: Actions
    spec: ServiceSpec = SPEC


TABLE: tuple[Row, ...] = (
    # -- start ---------------------------------------------------------------------------
    Row("a first start spawns and starts the settle timer", FRESH, Start(),
        replace(FRESH, wanted=True, settling=True), spawning(settle=True)),
    Row("with unsettled dependencies, it waits", FRESH, Start(("db",)),
        WAITING, (Disarm(Timer.BACKOFF), Disarm(Timer.LEFTOVERS), AwaitDependencies(("db",)))),
    Row("waiting, a start waits again for what `after` names now", WAITING,
        Start(("db", "cache")), replace(WAITING, reason="waiting for db, cache"),
        (CancelWait(), Disarm(Timer.BACKOFF), Disarm(Timer.LEFTOVERS),
         AwaitDependencies(("db", "cache")))),
    Row("waiting, a start with nothing left to wait for spawns", WAITING, Start(),
        replace(WAITING, settling=True), (CancelWait(), *spawning(settle=True))),
    Row("starting: already on its way, the failed starts are forgotten",
        replace(STARTING, failed_starts=2), Start(), STARTING, ()),
    Row("running: nothing to do", RUNNING, Start(), RUNNING, ()),
    Row("in backoff: spawn now", BACKOFF, Start(), BACKOFF, spawning()),
    Row("stopping: wanted again, so the exit respawns", STOPPING, Start(), RESTARTING, ()),
    Row("exited: spawn again", EXITED, Start(), replace(EXITED, wanted=True), spawning()),
    Row("fatal: a start is a fresh set of start retries", FATAL, Start(),
        replace(FATAL, failed_starts=0, settling=True), spawning(settle=True)),
    # -- stop ----------------------------------------------------------------------------
    Row("stopped: stays stopped; dependents need not wait for it", FRESH, Stop(),
        replace(FRESH, settled=True), (*STOP_NOW, Settle())),
    Row("waiting: stops waiting", WAITING, Stop(), Phase(settled=True),
        (*STOP_NOW, CancelWait(), Settle())),
    Row("starting: the stop signal, SIGKILL at stopwaitsecs", STARTING, Stop(),
        replace(STARTING, state=State.STOPPING, wanted=False, settling=False,
                halt=Halt(110.0)), (*STOP_NOW, *stopping())),
    Row("running: the stop signal, SIGKILL at stopwaitsecs", RUNNING, Stop(),
        replace(RUNNING, state=State.STOPPING, wanted=False, halt=Halt(110.0)),
        (*STOP_NOW, *stopping())),
    Row("a drain's deadline before stopwaitsecs brings SIGKILL forward", RUNNING,
        Stop(deadline=103.0),
        replace(RUNNING, state=State.STOPPING, wanted=False, halt=Halt(103.0, True)),
        (*STOP_NOW, *stopping(grace=3.0))),
    Row("already stopping when the drain began: the earlier SIGKILL wins", STOPPING,
        Stop(deadline=103.0), replace(STOPPING, halt=Halt(103.0, True)),
        (*STOP_NOW, Arm(Timer.KILL, 3.0))),
    Row("already stopping, a later deadline changes nothing", STOPPING, Stop(deadline=200.0),
        STOPPING, STOP_NOW),
    Row("exited and waiting to respawn: the respawn is off", RESPAWNING, Stop(), STOPPED,
        (*STOP_NOW, Settle())),
    Row("in backoff: no more tries", BACKOFF, Stop(),
        replace(BACKOFF, state=State.STOPPED, reason="", wanted=False), (*STOP_NOW, Settle())),
    Row("exited: stays exited, with its reason", EXITED, Stop(), EXITED,
        (*STOP_NOW, Settle())),
    Row("fatal: no more tries", FATAL, Stop(),
        replace(FATAL, state=State.STOPPED, reason="", wanted=False, settled=True),
        (*STOP_NOW, Settle())),
    # -- restart -------------------------------------------------------------------------
    Row("stopped: counted, then a start", FRESH, Restart("manual"),
        replace(FRESH, wanted=True, settling=True),
        (CountRestart("manual"), *spawning(settle=True))),
    Row("waiting: counted, then waits again", WAITING, Restart("reload", ("db",)), WAITING,
        (CountRestart("reload"), CancelWait(), Disarm(Timer.BACKOFF), Disarm(Timer.LEFTOVERS),
         AwaitDependencies(("db",)))),
    Row("starting: counted, stopped, spawned again on the exit", STARTING, Restart("manual"),
        replace(STARTING, state=State.STOPPING, halt=Halt(110.0)),
        (CountRestart("manual"), *stopping())),
    Row("running: counted, stopped, spawned again on the exit", RUNNING, Restart("manual"),
        replace(RESTARTING, halt=Halt(110.0)), (CountRestart("manual"), *stopping())),
    Row("in backoff: counted, spawned now", BACKOFF, Restart("manual"), BACKOFF,
        (CountRestart("manual"), *spawning())),
    Row("stopping: counted; the exit respawns", STOPPING, Restart("manual"), RESTARTING,
        (CountRestart("manual"),)),
    Row("exited: counted, spawned", EXITED, Restart("manual"), replace(EXITED, wanted=True),
        (CountRestart("manual"), *spawning())),
    Row("fatal: counted, spawned with fresh start retries", FATAL, Restart("reload"),
        replace(FATAL, failed_starts=0, settling=True),
        (CountRestart("reload"), *spawning(settle=True))),
    # -- dependencies settled ------------------------------------------------------------
    Row("what it waited for is ready: spawn", WAITING, DependenciesSettled(),
        replace(WAITING, settling=True), spawning(settle=True)),
    Row("a dependency gave up getting ready: spawn anyway, and say so", WAITING,
        DependenciesSettled(("db",)), replace(WAITING, settling=True),
        (said("starting_anyway", "warning", not_ready=["db"]), *spawning(settle=True))),
    # -- spawned -------------------------------------------------------------------------
    Row("without a ready probe, startsecs decides", WANTED, Spawned(PID, NOW),
        replace(WANTED, state=State.STARTING, run=NEW_RUN),
        (*SPAWNED, Arm(Timer.STARTSECS, 1.0))),
    Row("with a ready probe, its verdict decides, within start_timeout", WANTED,
        Spawned(PID, NOW), replace(WANTED, state=State.STARTING, run=NEW_RUN),
        (*SPAWNED, Arm(Timer.START_TIMEOUT, 60.0)), PROBED),
    Row("startsecs=0 and no probe: running and ready at once", WANTED, Spawned(PID, NOW),
        replace(WANTED, state=State.RUNNING, run=replace(NEW_RUN, ready=True), settled=True,
                settling=False, ever_ready=True), (*SPAWNED, *READY), INSTANT),
    Row("spawned after waiting", replace(WAITING, settling=True), Spawned(PID, NOW),
        replace(WANTED, state=State.STARTING, run=NEW_RUN),
        (*SPAWNED, Arm(Timer.STARTSECS, 1.0))),
    Row("spawned after a backoff", BACKOFF, Spawned(PID, NOW),
        replace(BACKOFF, state=State.STARTING, reason="", run=NEW_RUN),
        (*SPAWNED, Arm(Timer.STARTSECS, 1.0))),
    Row("respawned after a restart's exit", RESPAWNING, Spawned(PID, NOW),
        replace(RESPAWNING, state=State.STARTING, run=NEW_RUN),
        (*SPAWNED, Arm(Timer.STARTSECS, 1.0))),
    Row("spawned after it had exited", replace(EXITED, wanted=True), Spawned(PID, NOW),
        replace(EXITED, state=State.STARTING, wanted=True, run=NEW_RUN),
        (*SPAWNED, Arm(Timer.STARTSECS, 1.0))),
    Row("spawned after FATAL: the failed starts still count", FATAL, Spawned(PID, NOW),
        replace(FATAL, state=State.STARTING, reason="", run=NEW_RUN),
        (*SPAWNED, Arm(Timer.STARTSECS, 1.0))),
    # -- spawn failed --------------------------------------------------------------------
    Row("a first failure is retried at once", WANTED, SpawnFailed("no such file"),
        replace(WANTED, state=State.BACKOFF, reason="spawn failed: no such file",
                failed_starts=1, failures_in_a_row=1, last_exit="spawn failed: no such file"),
        (said("spawn_failed", "error", error="no such file"),
         *backoff("crash", "spawn failed: no such file", 0.0))),
    Row("after waiting, the same", replace(WAITING, settling=True), SpawnFailed("x"),
        replace(WANTED, state=State.BACKOFF, reason="spawn failed: x", failed_starts=1,
                failures_in_a_row=1, last_exit="spawn failed: x"),
        (said("spawn_failed", "error", error="x"), *backoff("crash", "spawn failed: x", 0.0))),
    Row("failures in a row back off", BACKOFF, SpawnFailed("x"),
        replace(BACKOFF, reason="spawn failed: x", failed_starts=1, failures_in_a_row=3,
                last_exit="spawn failed: x", last_exit_code=None),
        (said("spawn_failed", "error", error="x"), *backoff("crash", "spawn failed: x", 1.0))),
    Row("past startretries: FATAL, retried at the cap", FATAL, SpawnFailed("x"),
        replace(FATAL, reason="spawn failed: x; failed to start 5 times in a row, retrying "
                "every 30s", failed_starts=5, failures_in_a_row=5,
                last_exit="spawn failed: x", last_exit_code=None),
        (said("spawn_failed", "error", error="x"),
         *backoff("crash", "spawn failed: x; failed to start 5 times in a row, retrying every "
                  "30s", 30.0, "error"))),
    Row("past startretries from backoff: FATAL", replace(BACKOFF, failed_starts=3),
        SpawnFailed("x"),
        replace(BACKOFF, state=State.FATAL, reason="spawn failed: x; failed to start 4 times in "
                "a row, retrying every 30s", failed_starts=4, failures_in_a_row=3,
                last_exit="spawn failed: x", last_exit_code=None),
        (said("spawn_failed", "error", error="x"),
         *backoff("crash", "spawn failed: x; failed to start 4 times in a row, retrying every "
                  "30s", 30.0, "error"))),
    Row("respawn after a restart failed", RESPAWNING, SpawnFailed("x"),
        replace(RESPAWNING, state=State.BACKOFF, reason="spawn failed: x", failed_starts=1,
                failures_in_a_row=1, last_exit="spawn failed: x"),
        (said("spawn_failed", "error", error="x"), *backoff("crash", "spawn failed: x", 0.0))),
    Row("a start after an exit failed", replace(EXITED, wanted=True), SpawnFailed("x"),
        replace(EXITED, state=State.BACKOFF, wanted=True, reason="spawn failed: x",
                failed_starts=1, failures_in_a_row=1, last_exit="spawn failed: x",
                last_exit_code=None),
        (said("spawn_failed", "error", error="x"), *backoff("crash", "spawn failed: x", 0.0))),
    # -- startsecs, start_timeout, settle ------------------------------------------------
    Row("past startsecs without a probe: running and ready", STARTING, StartsecsElapsed(),
        replace(STARTING, state=State.RUNNING, run=Run(PID, 99.5, ready=True), settled=True,
                settling=False, ever_ready=True), READY),
    Row("with a ready probe, startsecs plays no part", STARTING, StartsecsElapsed(),
        STARTING, (), PROBED),
    Row("not ready within start_timeout: a failed start; dependents go ahead", STARTING,
        StartTimedOut(),
        replace(STARTING, state=State.STOPPING, reason="not ready within start_timeout (60s)",
                settled=True, settling=False, halt=Halt(110.0, failed_start=True)),
        (said("start_timeout", "warning", seconds=60.0), Settle(), Disarm(Timer.SETTLE),
         *stopping()), PROBED),
    Row("settle: stopped, about to spawn", WANTED, SettleTimedOut(),
        replace(WANTED, settled=True, settling=False),
        (said("not_ready_in_time", "warning", seconds=60.0), Settle())),
    Row("settle: still waiting itself", replace(WAITING, settling=True), SettleTimedOut(),
        replace(WAITING, settled=True),
        (said("not_ready_in_time", "warning", seconds=60.0), Settle())),
    Row("settle: starting for longer than start_timeout", STARTING, SettleTimedOut(),
        replace(STARTING, settled=True, settling=False),
        (said("not_ready_in_time", "warning", seconds=60.0), Settle())),
    Row("settle: running and ready, settled already", RUNNING, SettleTimedOut(), RUNNING, ()),
    Row("settle: crash-looping since the first spawn",
        replace(BACKOFF, settled=False, settling=True), SettleTimedOut(),
        replace(BACKOFF, settled=True),
        (said("not_ready_in_time", "warning", seconds=60.0), Settle())),
    Row("settle: stopping, settled already", STOPPING, SettleTimedOut(), STOPPING, ()),
    Row("settle: fatal since the first spawn", replace(FATAL, settling=True),
        SettleTimedOut(), replace(FATAL, settled=True),
        (said("not_ready_in_time", "warning", seconds=60.0), Settle())),
    # -- probes --------------------------------------------------------------------------
    Row("the ready probe passed: starting is over", STARTING, ReadyPassed(),
        replace(STARTING, state=State.RUNNING, run=Run(PID, 99.5, ready=True), settled=True,
                settling=False, ever_ready=True), READY, PROBED),
    Row("liveness failed `failures` times: restarted", RUNNING,
        LivenessFailed(3, "connection refused"),
        replace(RUNNING, state=State.STOPPING, halt=Halt(110.0)),
        (said("liveness_failed", "warning", failures=3), CountRestart("liveness"),
         *stopping()), PROBED),
    Row("liveness failed fewer times than `failures`: nothing yet", RUNNING,
        LivenessFailed(2, "connection refused"), RUNNING, (), PROBED),
    Row("liveness failing in the startup window: still coming up", STARTING,
        LivenessFailed(3, "connection refused"), STARTING, (), PROBED),
    Row("liveness failing past the startup window: restarted",
        replace(STARTING, run=Run(PID, 10.0)), LivenessFailed(3, "connection refused"),
        replace(STARTING, state=State.STOPPING, run=Run(PID, 10.0), halt=Halt(110.0)),
        (said("liveness_failed", "warning", failures=3), CountRestart("liveness"),
         *stopping()), PROBED),
    # -- exited --------------------------------------------------------------------------
    Row("an exit before startsecs is a failed start", STARTING, Exited("exit 1", 1, 0.5),
        replace(STARTING, state=State.BACKOFF, reason="exit 1 before startsecs (1s)", run=None,
                failed_starts=1, failures_in_a_row=1, last_exit="exit 1", last_exit_code=1),
        (*exiting("exit 1", 0.5), *backoff("crash", "exit 1 before startsecs (1s)", 0.0))),
    Row("the failed start past startretries: FATAL", replace(STARTING, failed_starts=3),
        Exited("exit 2", 2, 0.5),
        replace(STARTING, state=State.FATAL, run=None, failed_starts=4, failures_in_a_row=1,
                reason="exit 2 before startsecs (1s); failed to start 4 times in a row, "
                "retrying every 30s", last_exit="exit 2", last_exit_code=2),
        (*exiting("exit 2", 0.5),
         *backoff("crash", "exit 2 before startsecs (1s); failed to start 4 times in a row, "
                  "retrying every 30s", 30.0, "error"))),
    Row("with a ready probe, an exit before it passed is a failed start", STARTING,
        Exited("exit 1", 1, 0.5),
        replace(STARTING, state=State.BACKOFF, run=None, failed_starts=1, failures_in_a_row=1,
                reason="exit 1 before its readiness probe passed", last_exit="exit 1",
                last_exit_code=1),
        (*exiting("exit 1", 0.5),
         *backoff("crash", "exit 1 before its readiness probe passed", 0.0)), PROBED),
    Row("a crash after a stable run comes back at once",
        replace(RUNNING, failures_in_a_row=4, failed_starts=2), Exited("exit 1", 1, 50.0),
        replace(RUNNING, state=State.BACKOFF, reason="exit 1", run=None, failures_in_a_row=1,
                last_exit="exit 1", last_exit_code=1),
        (*exiting("exit 1", 50.0), *backoff("crash", "exit 1", 0.0))),
    Row("crashes in a row back off", replace(RUNNING, failures_in_a_row=2),
        Exited("exit 1", 1, 2.0),
        replace(RUNNING, state=State.BACKOFF, reason="exit 1", run=None, failures_in_a_row=3,
                last_exit="exit 1", last_exit_code=1),
        (*exiting("exit 1", 2.0), *backoff("crash", "exit 1", 1.0))),
    Row("an expected exit under autorestart=unexpected: exited", RUNNING,
        Exited("exit 0", 0, 50.0),
        replace(RUNNING, state=State.EXITED, wanted=False, run=None, last_exit="exit 0",
                last_exit_code=0), (*exiting("exit 0", 50.0), Settle())),
    Row("an expected exit under autorestart=true: restarted, counted as `exit`", RUNNING,
        Exited("exit 0", 0, 50.0),
        replace(RUNNING, state=State.BACKOFF, reason="exit 0", run=None, failures_in_a_row=1,
                last_exit="exit 0", last_exit_code=0),
        (*exiting("exit 0", 50.0), *backoff("exit", "exit 0", 0.0)), ALWAYS),
    Row("a crash under autorestart=false: exited, saying why", RUNNING,
        Exited("exit 1", 1, 50.0),
        replace(RUNNING, state=State.EXITED, wanted=False, run=None, last_exit="exit 1",
                last_exit_code=1, reason="exit 1 (not restarted: autorestart=false)"),
        (*exiting("exit 1", 50.0), Settle()), NEVER),
    Row("stopped as asked", STOPPING, Exited("signal 15 (SIGTERM)", -15, 50.0),
        replace(STOPPING, state=State.STOPPED, run=None, halt=None,
                last_exit="signal 15 (SIGTERM)", last_exit_code=-15),
        (*exiting("signal 15 (SIGTERM)", 50.0), Settle())),
    Row("a restart's exit: spawned again at once", RESTARTING, Exited("exit 0", 0, 50.0),
        replace(RESPAWNING, last_exit="exit 0", last_exit_code=0),
        (*exiting("exit 0", 50.0), *spawning())),
    Row("the exit of a start that timed out: a failed start", TIMING_OUT,
        Exited("signal 15 (SIGTERM)", -15, 60.0),
        replace(TIMING_OUT, state=State.BACKOFF, run=None, halt=None, failed_starts=1,
                failures_in_a_row=1, last_exit="signal 15 (SIGTERM)", last_exit_code=-15),
        (*exiting("signal 15 (SIGTERM)", 60.0),
         *backoff("crash", "not ready within start_timeout (60s)", 0.0))),
    Row("stopped while a timed-out start was killed: stopped, with the reason",
        replace(TIMING_OUT, wanted=False), Exited("signal 15 (SIGTERM)", -15, 60.0),
        replace(TIMING_OUT, state=State.STOPPED, wanted=False, run=None, halt=None,
                failed_starts=1, failures_in_a_row=1, last_exit="signal 15 (SIGTERM)",
                last_exit_code=-15),
        exiting("signal 15 (SIGTERM)", 60.0)),
    # -- what the service tells (sd_notify) ---------------------------------------------
    Row("READY=1 ends starting, as a passing ready probe does", STARTING, ReadyPassed(),
        replace(STARTING, state=State.RUNNING, run=Run(PID, 99.5, ready=True), settled=True,
                settling=False, ever_ready=True), READY, NOTIFYING),
    Row("a spawn with a watchdog arms it", WANTED, Spawned(PID, NOW),
        replace(WANTED, state=State.STARTING, run=NEW_RUN),
        (*SPAWNED, Arm(Timer.WATCHDOG, 10.0), Arm(Timer.START_TIMEOUT, 60.0)), NOTIFYING),
    Row("EXTEND_TIMEOUT_USEC past start_timeout's end: start_timeout and settle re-armed",
        STARTING, StartExtended(90.0), replace(STARTING, run=Run(PID, 99.5, extended_to=190.0)),
        (said("start_extended", seconds=90.0), Arm(Timer.START_TIMEOUT, 90.0),
         Arm(Timer.SETTLE, 90.0)), NOTIFYING),
    Row("EXTEND_TIMEOUT_USEC inside start_timeout's window: nothing to move", STARTING,
        StartExtended(10.0), STARTING, (), NOTIFYING),
    Row("EXTEND_TIMEOUT_USEC without a ready probe: startsecs ends starting, not a timeout",
        STARTING, StartExtended(90.0), STARTING, ()),
    Row("WATCHDOG=1 while starting: the watchdog re-armed", STARTING, WatchdogKicked(),
        STARTING, (Arm(Timer.WATCHDOG, 10.0),), NOTIFYING),
    Row("WATCHDOG=1 while running: the watchdog re-armed", RUNNING, WatchdogKicked(),
        RUNNING, (Arm(Timer.WATCHDOG, 10.0),), NOTIFYING),
    Row("no WATCHDOG=1 in time: a liveness restart", RUNNING, WatchdogMissed(),
        replace(RUNNING, state=State.STOPPING, halt=Halt(110.0),
                reason="watchdog: no WATCHDOG=1 in 10s"),
        (said("watchdog_missed", "warning", seconds=10.0), CountRestart("liveness"),
         *stopping()), NOTIFYING),
    Row("no WATCHDOG=1 while starting: a liveness restart too (no startup window)", STARTING,
        WatchdogMissed(), replace(STARTING, state=State.STOPPING, halt=Halt(110.0),
                                  reason="watchdog: no WATCHDOG=1 in 10s"),
        (said("watchdog_missed", "warning", seconds=10.0), CountRestart("liveness"),
         *stopping()), NOTIFYING),
    # -- backoff, kill, drain ------------------------------------------------------------
    Row("backoff over: spawn", BACKOFF, BackoffElapsed(), BACKOFF, spawning()),
    Row("fatal's retry: spawn", FATAL, BackoffElapsed(), replace(FATAL, settling=True),
        spawning(settle=True)),
    Row("stopwaitsecs passed: SIGKILL", STOPPING, KillDue(), STOPPING,
        (said("killed", "warning", pid=PID, cause="stopwaitsecs"),
         SignalGroup(signal.SIGKILL))),
    Row("the drain's deadline passed: SIGKILL, noted",
        replace(STOPPING, halt=Halt(103.0, by_deadline=True)), KillDue(),
        replace(STOPPING, halt=Halt(103.0, by_deadline=True), killed_at_deadline=True),
        (said("killed", "warning", pid=PID, cause="drain deadline"),
         SignalGroup(signal.SIGKILL))),
    Row("a restart's process already gone: nothing to kill", RESPAWNING, KillDue(),
        RESPAWNING, ()),
    Row("drain kill while starting", STARTING, DrainKill(),
        replace(STARTING, wanted=False, killed_at_deadline=True),
        (SignalGroup(signal.SIGKILL),)),
    Row("drain kill while running (waiting for its dependents to stop)", RUNNING, DrainKill(),
        replace(RUNNING, wanted=False, killed_at_deadline=True),
        (SignalGroup(signal.SIGKILL),)),
    Row("drain kill while stopping", STOPPING, DrainKill(),
        replace(STOPPING, killed_at_deadline=True), (SignalGroup(signal.SIGKILL),)),
    # -- tasks ---------------------------------------------------------------------------
    Row("a task's start: no settle timer, its dependents wait for its success", FRESH,
        Start(), replace(FRESH, wanted=True), (Disarm(Timer.BACKOFF), Spawn()), TASK),
    Row("a task spawned: starting until it exits, its timeout armed", WANTED,
        Spawned(PID, NOW), replace(WANTED, state=State.STARTING, run=NEW_RUN),
        (said("spawned", pid=PID), Arm(Timer.START_TIMEOUT, 30.0)), TASK),
    Row("a task's exit 0: done; its dependents may start, its stamp is written",
        replace(STARTING, settling=False), Exited("exit 0", 0, 0.5),
        Phase(State.EXITED, settled=True, ever_ready=True, last_exit="exit 0",
              last_exit_code=0),
        (*exiting("exit 0", 0.5), Settle(), MarkDone(), said("task_succeeded")), TASK),
    Row("a task's failed attempt with a retry left: tried again",
        replace(STARTING, settling=False), Exited("exit 3", 3, 0.5),
        replace(STARTING, state=State.BACKOFF, reason="exit 3", run=None, settling=False,
                failed_starts=1, failures_in_a_row=1, last_exit="exit 3", last_exit_code=3),
        (*exiting("exit 3", 0.5), CountRestart("crash"),
         said("backoff", "warning", delay_seconds=0.0, reason="exit 3"),
         Disarm(Timer.BACKOFF), Spawn()), TASK),
    Row("a task's last attempt failed: fatal for good, its dependents held back",
        replace(STARTING, settling=False, failed_starts=1, failures_in_a_row=1),
        Exited("exit 3", 3, 0.5),
        Phase(State.FATAL, "exit 3; failed 2 times, not retried", settled=True,
              failed_starts=2, failures_in_a_row=2, last_exit="exit 3", last_exit_code=3,
              failed=True),
        (*exiting("exit 3", 0.5), Settle(),
         said("task_failed", "error", exit_code=3,
              reason="exit 3; failed 2 times, not retried")), TASK),
    Row("a task past its timeout: stopped, the attempt failed",
        replace(STARTING, settling=False), StartTimedOut(),
        Phase(State.STOPPING, "timed out after 30s", wanted=True, run=Run(PID, 99.5),
              halt=Halt(110.0, failed_start=True)),
        (said("task_timed_out", "warning", seconds=30.0), *stopping()), TASK),
    Row("a timed-out task's exit with no retry left: fatal",
        Phase(State.STOPPING, "timed out after 30s", wanted=True, run=Run(PID, 70.0),
              halt=Halt(110.0, failed_start=True), failed_starts=1, failures_in_a_row=1),
        Exited("signal 15 (SIGTERM)", -15, 30.0),
        Phase(State.FATAL, "timed out after 30s; failed 2 times, not retried", settled=True,
              failed_starts=2, failures_in_a_row=2, last_exit="signal 15 (SIGTERM)",
              last_exit_code=-15, failed=True),
        (*exiting("signal 15 (SIGTERM)", 30.0), Settle(),
         said("task_failed", "error", exit_code=-15,
              reason="timed out after 30s; failed 2 times, not retried")), TASK),
    Row("a task's spawn failed, no retry left: fatal",
        replace(WANTED, settling=False, failed_starts=1), SpawnFailed("no such file"),
        Phase(State.FATAL, "spawn failed: no such file; failed 2 times, not retried",
              settled=True, failed_starts=2, failures_in_a_row=1,
              last_exit="spawn failed: no such file", failed=True),
        (said("spawn_failed", "error", error="no such file"), Settle(),
         said("task_failed", "error", exit_code=None,
              reason="spawn failed: no such file; failed 2 times, not retried")), TASK),
    Row("what it runs after failed: held back, and so are its own dependents", WAITING,
        DependenciesSettled((), ("seed failed (exit 3)",)),
        Phase(State.FATAL, "not started: seed failed (exit 3)", settled=True, failed=True),
        (Settle(), said("dependency_failed", "error", failed=["seed failed (exit 3)"]))),
    Row("a failed task started again: a fresh set of attempts",
        Phase(State.FATAL, "exit 3; failed 2 times, not retried", settled=True,
              failed_starts=2, failures_in_a_row=2, failed=True),
        Start(),
        Phase(State.FATAL, "exit 3; failed 2 times, not retried", wanted=True, settled=True,
              failures_in_a_row=2),
        (Disarm(Timer.BACKOFF), Spawn()), TASK),
)

# A representative of each event and of each state, for the pairs declared ignored.
SAMPLE_EVENTS: dict[type[Event], Event] = {
    Start: Start(), Stop: Stop(), Restart: Restart("manual"),
    DependenciesSettled: DependenciesSettled(), Spawned: Spawned(PID, NOW),
    SpawnFailed: SpawnFailed("x"), StartsecsElapsed: StartsecsElapsed(),
    StartTimedOut: StartTimedOut(), SettleTimedOut: SettleTimedOut(),
    ReadyPassed: ReadyPassed(), LivenessFailed: LivenessFailed(3, "x"),
    Exited: Exited("exit 1", 1, 1.0), BackoffElapsed: BackoffElapsed(), KillDue: KillDue(),
    DrainKill: DrainKill(), StartExtended: StartExtended(5.0),
    WatchdogKicked: WatchdogKicked(), WatchdogMissed: WatchdogMissed()}
SAMPLE_PHASES: dict[State, Phase] = {
    State.STOPPED: WANTED, State.WAITING: WAITING, State.STARTING: STARTING,
    State.RUNNING: RUNNING, State.BACKOFF: BACKOFF, State.STOPPING: STOPPING,
    State.EXITED: EXITED, State.FATAL: FATAL}


@pytest.mark.parametrize("row", TABLE, ids=[row.why for row in TABLE])
def test_transition(row: Row) -> None:
    """Each line of the table: the phase after the event, and the actions, in order."""
    after, actions = step(row.phase, row.spec, row.event, NOW)
    assert after == row.after
    assert actions == row.actions


def test_every_state_and_event_is_a_transition_or_declared_ignored() -> None:
    """No pair is left undecided: each state and event is in the table or in IGNORED, never both."""
    covered = {(row.phase.state, type(row.event)) for row in TABLE}
    assert tuple(SAMPLE_EVENTS) == EVENTS
    everything = {(state, event) for state in State for event in EVENTS}
    assert not covered & IGNORED, sorted(str(p) for p in covered & IGNORED)
    missing = everything - covered - IGNORED
    assert not missing, sorted(f"{state.value} x {event.__name__}" for state, event in missing)


@pytest.mark.parametrize(("state", "event"), sorted(IGNORED, key=str))
def test_ignored_pairs_change_nothing(state: State, event: type[Event]) -> None:
    """A pair declared ignored leaves the phase as it was and does nothing."""
    phase = SAMPLE_PHASES[state]
    for spec in (SPEC, PROBED, INSTANT):
        assert step(phase, spec, SAMPLE_EVENTS[event], NOW) == (phase, ())


def test_operator_restarts_do_not_count_towards_the_budget() -> None:
    """Manual and reload restarts are an operator's; crashes, exits and liveness are not."""
    assert [counts_towards_budget(r) for r in ("manual", "reload", "crash", "exit",
                                               "liveness")] == [False, False, True, True, True]


def test_the_budget_counts_restarts_inside_the_window_only() -> None:
    """restart_budget 2/60s: a third restart inside the last minute is over it; older ones
    have expired."""
    assert not over_budget([50.0, 60.0], 2, 60.0, NOW)
    assert over_budget([50.0, 60.0, 99.0], 2, 60.0, NOW)
    assert not over_budget([10.0, 60.0, 99.0], 2, 60.0, NOW)


# -- the diagram in docs/LIFECYCLE.md ---------------------------------------------------------

_EDGE = re.compile(r"^\s*(\w+|\[\*\])\s*-->\s*(\w+)\s*:\s*(.+?)\s*$")


def _label(event: type[Event]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event.__name__).lower()


def table_edges() -> dict[tuple[str, str], set[str]]:
    """Every change of state in the table, with the events that make it."""
    edges: dict[tuple[str, str], set[str]] = {}
    for row in TABLE:
        if row.after.state is not row.phase.state:
            key = (row.phase.state.value, row.after.state.value)
            edges.setdefault(key, set()).add(_label(type(row.event)))
    return edges


def mermaid(edges: dict[tuple[str, str], set[str]]) -> str:
    lines = ["stateDiagram-v2", "    [*] --> stopped"]
    lines += [f"    {a} --> {b}: {', '.join(sorted(labels))}"
              for (a, b), labels in sorted(edges.items())]
    return "\n".join(lines)


def test_the_documented_diagram_is_the_table() -> None:
    """docs/LIFECYCLE.md's mermaid diagram has exactly the table's state changes."""
    text = (ROOT / "docs" / "LIFECYCLE.md").read_text()
    block = re.search(r"```mermaid\n(.*?)```", text, re.S)
    assert block is not None, "docs/LIFECYCLE.md has no mermaid block"
    documented: dict[tuple[str, str], set[str]] = {}
    for line in block.group(1).splitlines():
        if (edge := _EDGE.match(line)) and edge.group(1) != "[*]":
            documented[(edge.group(1), edge.group(2))] = {
                label.strip() for label in edge.group(3).split(",")}
    assert documented == table_edges(), (
        "docs/LIFECYCLE.md's diagram differs from the table; this block is the table's:\n"
        + mermaid(table_edges()))


def test_events_and_actions_are_frozen_values() -> None:
    """Equal by type and fields, hashable, frozen, shown with their fields; a missing or
    unknown field is refused."""
    assert Spawned(PID, NOW) == Spawned(pid=PID, at=NOW)
    assert StartProbes() != StopProbes()
    assert Stop() == Stop(None) and hash(Stop()) == hash(Stop(None))
    assert repr(Arm(Timer.KILL, 3.0)) == "Arm(timer=<Timer.KILL: 'kill'>, delay=3.0)"
    with pytest.raises(AttributeError):
        Stop().deadline = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError, match="pid is missing"):
        Spawned(at=NOW)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="no such field"):
        Stop(1.0, 2.0)  # type: ignore[call-arg]
