"""One service: where its lifecycle (start.lifecycle, docs/LIFECYCLE.md) meets the world.

`Service` turns what happens (a verb, a spawn, an exit, a timer, a probe's verdict) into a
`start.lifecycle` event, takes the next phase from `step` and carries out its actions. It is the
only place with side effects for a service; it decides nothing the lifecycle decides. All
methods run on the event loop; the reaper calls `_on_reaped` from the SIGCHLD wakeup.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from healthz.freshness import is_stale
from healthz.model import OOM_KILLED, ServiceSnapshot, State
from healthz.probe_spec import SELF_REPORTED
from start import lifecycle
from start.catalogue import ServiceSpec
from start.lifecycle import (
    PACING,
    Action,
    Event,
    Pacing,
    Phase,
    Timer,
)
from start.logs import Console, Pump, ServiceLog
from start.notify import Told, extension_seconds, one_line
from start.process import ChildProcess, SpawnError, spawn
from start.readyfd import ReadyFd
from start.reaper import Reaper, describe_status

if TYPE_CHECKING:
    from healthz.metrics_deferred import Metrics
    from healthz.probe_exec import ExecRunner
    from healthz.probe_loop import ProbeLoop
    from healthz.probe_run import ProbeResult
    from start.notify import NotifySocket
    from start.oomkill import OomCounter

LEFTOVER_POLL = 0.005  # seconds between checks that a dead run's group is empty
LEFTOVER_WAIT = 2.0  # after this, start anyway (something in D state ignores SIGKILL) and say so
RECENT_WINDOW = 600.0  # without a restart_budget, /health counts restarts over 10 minutes

ProbeKind = Literal["ready", "live"]

# What each timer feeds when it fires (LEFTOVERS belongs to the Spawn action: see _spawn).
_TIMER_EVENTS: dict[Timer, Callable[[], Event]] = {
    Timer.STARTSECS: lifecycle.StartsecsElapsed,
    Timer.START_TIMEOUT: lifecycle.StartTimedOut,
    Timer.SETTLE: lifecycle.SettleTimedOut,
    Timer.BACKOFF: lifecycle.BackoffElapsed,
    Timer.KILL: lifecycle.KillDue,
    Timer.WATCHDOG: lifecycle.WatchdogMissed,
}


@dataclass
class EngineContext:
    """What every service shares: handed in, so tests can swap any of it."""

    loop: asyncio.AbstractEventLoop
    reaper: Reaper
    console: Console
    emit: Callable[..., None]  # the supervisor's own event log
    logs_dir: Path
    base_env: dict[str, str]
    exec_runner: ExecRunner | None = None  # None: each service's own ReaperExecRunner, when needed
    metrics: Metrics | None = None  # set once the engine has one
    clock: Callable[[], float] = time.monotonic
    pacing: Pacing = PACING  # how fast restarts come back (tests shrink it)
    services: dict[str, Service] = field(default_factory=dict)
    # Spawned before the engine (start.early), by name; the boot adopts them.
    prespawned: dict[str, ChildProcess] = field(default_factory=dict)
    notify: NotifySocket | None = None  # the sd_notify socket, once the engine bound it
    oom: OomCounter | None = None  # the pod's memory cgroup's OOM kills (start.oomkill)
    # Told, once, of a service with on_fatal=exit that can no longer be healed, and why.
    on_unhealable: Callable[[Service, str], None] | None = None


class _Timers:
    """At most one pending call per `Timer`; arming one again replaces it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fired: Callable[[Timer], None]) -> None:
        self._loop = loop
        self._fired = fired
        self._handles: dict[Timer, asyncio.TimerHandle] = {}

    def arm(self, timer: Timer, delay: float) -> None:
        self.disarm(timer)
        self._handles[timer] = self._loop.call_later(delay, self._fire, timer)

    def disarm(self, timer: Timer) -> None:
        handle = self._handles.pop(timer, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, timer: Timer) -> None:
        del self._handles[timer]
        self._fired(timer)


class Service:
    def __init__(self, spec: ServiceSpec, ctx: EngineContext, *, done_before: bool = False
                 ) -> None:
        """`done_before`: a `once=volume` task whose stamp matches (start.taskstamp): it
        begins as succeeded, and runs only when asked to (podctl start)."""
        self.spec = spec
        self.ctx = ctx
        self._phase = Phase()
        if done_before:
            self._phase = Phase(State.EXITED, settled=True, ever_ready=True,
                                last_exit="done on an earlier boot (stamp)")
        self._proc: ChildProcess | None = None  # the process of `_phase.run`
        self._timers = _Timers(ctx.loop, self._on_timer)
        self._events: deque[Event] = deque()  # fed while an earlier event's actions run
        self._stepping = False
        self._settled = asyncio.Event()  # ready once, or gave up waiting: dependents may start
        self._changed = asyncio.Event()  # set (and replaced) on every change of the phase
        self._stop_waiters: list[asyncio.Future[None]] = []
        self._waiting: asyncio.Task[None] | None = None  # for the services named in `after`
        self._restarts: Counter[str] = Counter()
        # Counted restarts inside restart_window: the budget's, and /health's liveness.
        self._restart_times: deque[float] = deque()
        self._oom_kills = 0
        self._oom_refusal_said = False
        self._probes: dict[ProbeKind, ProbeLoop] = {}
        self._probe_stops: set[asyncio.Task[None]] = set()
        self._pumps: list[Pump] = []
        self._log: ServiceLog | None = None
        self._retired = False  # removed from the pod: the log closes once its pumps are done
        # The last run's process group, until it is empty, and how long a spawn waits for that.
        self._leftovers: tuple[ChildProcess, float] | None = None
        self._told = Told()  # what the current run said of itself (sd_notify)
        self._ready_fd: ReadyFd | None = None  # ready=fd:N's pipe, until the newline
        self._gave_up = False  # on_fatal=exit has told the engine
        self._ready_reported = False  # the readiness last reported by `readiness` (probe flips)
        if done_before:
            self._settled.set()

    # -- what others ask ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def state(self) -> State:
        return self._phase.state

    @property
    def reason(self) -> str:
        return self._phase.reason

    @property
    def want_running(self) -> bool:
        return self._phase.wanted

    @property
    def ever_ready(self) -> bool:
        return self._phase.ever_ready

    @property
    def killed_at_deadline(self) -> bool:
        """The drain's deadline, not stopwaitsecs, forced a SIGKILL."""
        return self._phase.killed_at_deadline

    @property
    def settled(self) -> asyncio.Event:
        """Set once ready, or once it gave up getting ready: dependents may start."""
        return self._settled

    @property
    def proc(self) -> ChildProcess | None:
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def restarts(self) -> int:
        return sum(self._restarts.values())

    @property
    def last_exit(self) -> str | None:
        return self._phase.last_exit

    @property
    def last_exit_code(self) -> int | None:
        return self._phase.last_exit_code

    def probe(self, kind: ProbeKind) -> ProbeLoop | None:
        """The running probe of `kind`, to read (its counters, its last result)."""
        return self._probes.get(kind)

    @property
    def failed(self) -> bool:
        """A task that failed for good, or a service held back by one (see Phase.failed); or a
        task stopped before it succeeded: what runs after it must not start either way."""
        phase = self._phase
        return phase.failed or (self.spec.task is not None and not phase.ever_ready
                                and not phase.wanted and phase.settled)

    def failure(self) -> str:
        """How a dependent names this failure in its reason: `seed failed (exit 3)`."""
        if self.spec.task is None:
            return f"{self.name} not started"
        return f"{self.name} failed ({self.last_exit or self.state.value})"

    @property
    def ready(self) -> bool:
        if self.spec.task is not None:  # ready once it succeeded, until it runs again
            return self.state is State.EXITED and self._phase.ever_ready
        run = self._phase.run
        if run is None or self._proc is None or self.state not in (State.STARTING,
                                                                   State.RUNNING):
            return False
        if self._told.holding:  # RELOADING=1 or STOPPING=1, and no READY=1 since
            return False
        probe = self._probes.get("ready")
        if probe is None:
            return self.state is State.RUNNING
        last = probe.last
        if last is None or not (last.passed or run.ready):
            return False
        # A stale result counts as failed (a hung probe); short of that, it takes `failures`
        # failures in a row to make a service that was ready unready.
        if is_stale(last.at, probe.interval, self.ctx.clock()):
            return False
        return probe.consecutive_failures < self.spec.health.failures

    @property
    def live(self) -> bool:
        probe = self._probes.get("live")
        return probe is None or probe.consecutive_failures < self.spec.health.failures

    @property
    def restart_window(self) -> float:
        """Over how many seconds recent restarts are counted: the budget's, or RECENT_WINDOW."""
        budget = self.spec.health.restart_budget
        return budget.window if budget is not None else RECENT_WINDOW

    def recent_restarts(self) -> int:
        """Restarts that count towards a budget (crash, exit, liveness) in the window."""
        now = self.ctx.clock()
        window = self.restart_window
        while self._restart_times and self._restart_times[0] < now - window:
            self._restart_times.popleft()  # older than the window: never needed again
        return len(self._restart_times)

    def budget_exhausted(self) -> bool:
        budget = self.spec.health.restart_budget
        if budget is None:
            return False
        self.recent_restarts()  # pruned to the window
        return lifecycle.over_budget(self._restart_times, budget.count, budget.window,
                                     self.ctx.clock())

    def snapshot(self) -> ServiceSnapshot:
        ready = self.ready
        reason = self.reason
        if not ready and not reason and self.spec.task is not None and self._proc is not None:
            reason = "running: a task is ready once it exits 0"
        elif not ready and not reason and self._told.holding:
            reason = f"the service said {self._told.holding}"
        elif not ready and not reason and self._proc is not None:
            probe = self._probes.get("ready")
            last = probe.last if probe is not None else None
            reason = f"readiness probe: {last.reason}" if last is not None else "not ready yet"
        elif not ready and not reason:
            reason = self.state.value  # stopped, exited: the state is the reason
        return ServiceSnapshot(
            name=self.name,
            state=self.state,
            critical=self.spec.health.critical,
            ready=ready,
            live=self.live,
            pid=self.pid,
            started_at=self._proc.started_at if self._proc else None,
            restarts=self.restarts,
            restarts_by_reason=dict(self._restarts),
            last_exit=self.last_exit,
            last_exit_code=self.last_exit_code,
            reason="" if ready else reason,
            budget_exhausted=self.budget_exhausted(),
            recent_restarts=self.recent_restarts(),
            restart_window=self.restart_window,
            oom_kills=self._oom_kills,
            log_write_failures=self._log.failures if self._log is not None else 0,
            transient=self.spec.transient,
            status=self._told.status if self._proc is not None else "",
            task=self.spec.task is not None,
            failed=self.failed,
            after=tuple(self.spec.after),
        )

    def dependencies(self) -> list[Service]:
        return [self.ctx.services[n] for n in self.spec.after if n in self.ctx.services]

    # -- verbs --------------------------------------------------------------------------------

    def request_start(self, dependencies: list[Service], coming: Collection[str] = ()) -> None:
        """Run it (again), after its dependencies have settled. `coming`: services about to be
        asked to start too (the boot), which it waits for as if they were wanted already."""
        self._feed(lifecycle.Start(self._unsettled(dependencies, coming)))

    async def stop(self, deadline: float | None = None) -> None:
        """Stop it and wait until its process is gone (SIGKILL at stopwaitsecs or deadline)."""
        waiter = self._stop_waiter()
        self._feed(lifecycle.Stop(deadline))
        if waiter is not None:
            await waiter
        if self._probe_stops:  # nothing of a probe (an exec probe's process) outlives a stop
            await asyncio.wait(set(self._probe_stops))

    def restart(self, reason: str, dependencies: list[Service]) -> asyncio.Future[None] | None:
        """Stop the process (if any) and start it again; counted under `reason`. Returns what
        resolves once the old process is gone, if there was one."""
        waiter = self._stop_waiter()
        self._feed(lifecycle.Restart(reason, self._unsettled(dependencies, ())))
        return waiter

    def reconfigure(self, spec: ServiceSpec) -> asyncio.Future[None] | None:
        """Take a spec changed by a reload. A running process is stopped the way it was started
        (its own stopsignal and stopwaitsecs) and comes back under the new spec."""
        if self._proc is None:
            self.spec = spec
            return self.restart("reload", self.dependencies()) if self.want_running else None
        stopping = self.restart("reload", self.dependencies())
        self.spec = spec  # the respawn after the exit is under it
        return stopping

    def adopt_spec(self, spec: ServiceSpec) -> None:
        """Take a spec without acting on it (a reload during a drain: it is stopping anyway)."""
        self.spec = spec

    def drain_kill(self) -> None:
        """The drain's deadline passed: SIGKILL the group now, and never bring it back."""
        self._feed(lifecycle.DrainKill())

    def on_notify(self, fields: dict[str, str]) -> None:
        """A datagram of its run on the sd_notify socket (start.notify), already attributed."""
        told = self._told
        if "STATUS" in fields:
            told = replace(told, status=one_line(fields["STATUS"]))
        for holding in ("RELOADING", "STOPPING"):
            if fields.get(holding) == "1":
                told = replace(told, holding=f"{holding}=1")
        ready = fields.get("READY") == "1"
        if ready:
            told = replace(told, holding="")
        changed, self._told = told != self._told, told
        if ready and self.spec.health.ready.kind == "notify":
            self._feed(lifecycle.ReadyPassed())
        extension = extension_seconds(fields.get("EXTEND_TIMEOUT_USEC", ""))
        if extension is not None:
            self._feed(lifecycle.StartExtended(extension))
        if fields.get("WATCHDOG") == "1":
            self._feed(lifecycle.WatchdogKicked())
        elif fields.get("WATCHDOG") == "trigger":
            self._feed(lifecycle.WatchdogMissed())
        if changed:
            self._notify()  # readiness may have changed

    def carries(self, pid: int, mark: str | None) -> bool:
        """Whether process `pid` (carrying run mark `mark`) belongs to the current run."""
        proc = self._proc
        return proc is not None and (pid == proc.pid or (bool(mark) and mark == proc.mark))

    def send_signal(self, signum: int) -> bool:
        return self._proc is not None and self._proc.signal_group(signum)

    def pids(self) -> list[int]:
        return [self._proc.pid] if self._proc else []

    def retire(self) -> None:
        """It leaves the pod (a transient service stopped): its log file is closed as soon as
        the last of its output is written, so that runs come and go without leaking files."""
        self._retired = True
        self._close_log_when_idle()

    def _close_log_when_idle(self) -> None:
        if self._retired and not self._pumps and self._log is not None:
            self._log.close()
            self._log = None

    def close_pumps(self) -> None:
        for pump in list(self._pumps):
            pump.close()

    async def wait_until(self, done: Callable[[], bool], limit: float) -> None:
        """Wake on each change of state or readiness until `done()` holds or `limit` passes."""
        loop = self.ctx.loop
        deadline = loop.time() + limit
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()

    def _unsettled(self, dependencies: list[Service], coming: Collection[str]) -> tuple[str, ...]:
        # One that failed is waited for too: the wait, settled at once, holds this one back.
        return tuple(d.name for d in dependencies
                     if ((d.want_running or d.name in coming) and not d.settled.is_set())
                     or d.failed)

    def _stop_waiter(self) -> asyncio.Future[None] | None:
        if self._proc is None:
            return None
        waiter: asyncio.Future[None] = self.ctx.loop.create_future()
        self._stop_waiters.append(waiter)
        return waiter

    # -- the lifecycle ------------------------------------------------------------------------

    def _feed(self, event: Event) -> None:
        """Step the lifecycle and carry out its actions. An event fed by an action (a spawn)
        waits until the actions of the step before are all done."""
        self._events.append(event)
        if self._stepping:
            return
        self._stepping = True
        try:
            while self._events:
                before = self._phase
                self._phase, actions = lifecycle.step(before, self.spec, self._events.popleft(),
                                                      self.ctx.clock(), self.ctx.pacing)
                for action in actions:
                    self._do(action)
                if self._phase != before:
                    self._notify()
        finally:
            self._stepping = False
        if self.spec.health.on_fatal == "exit" and not self._gave_up:
            self._give_up_if_unhealable()

    def _give_up_if_unhealable(self) -> None:
        """on_fatal=exit: past its retries or its restart budget, the pod ends (the engine
        drains) instead of failing /livez for a kubelet that a plain container does not have."""
        if self._phase.state is State.FATAL:
            cause = f"service {self.name} fatal"
        elif self.budget_exhausted():
            cause = f"restart budget of {self.name} exhausted"
        else:
            return
        self._gave_up = True
        if self.ctx.on_unhealable is not None:
            self.ctx.on_unhealable(self, cause)

    def _do(self, action: Action) -> None:
        match action:
            case lifecycle.Spawn():
                self._spawn()
            case lifecycle.StartProbes():
                self._start_probes()
            case lifecycle.StopProbes():
                self._stop_probes()
            case lifecycle.SignalGroup(signum):
                if self._proc is not None:
                    # A stop reaches what left the group too (start.strays).
                    self._proc.stop_signal(signum)
            case lifecycle.Arm(timer, delay):
                self._timers.arm(timer, delay)
            case lifecycle.Disarm(timer):
                self._timers.disarm(timer)
            case lifecycle.Emit(name, fields, level):
                self.ctx.emit(name, **dict(fields), level=level)
            case lifecycle.CountRestart(reason):
                self._count_restart(reason)
            case lifecycle.Settle():
                self._settled.set()
            case lifecycle.AwaitDependencies(names):
                self._await_dependencies(names)
            case lifecycle.CancelWait():
                if self._waiting is not None:
                    self._waiting.cancel()
                    self._waiting = None
            case lifecycle.MarkDone():
                self._mark_done()

    def _on_timer(self, timer: Timer) -> None:
        if timer is Timer.LEFTOVERS:
            if self.want_running and self._proc is None:
                self._spawn()
            return
        self._feed(_TIMER_EVENTS[timer]())

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _report_flip(self, was_running: bool) -> None:
        """A running service's readiness probe changed its verdict: say so (`readiness`), so
        that `podctl events -f` shows a probe flip without polling. The pass that made it
        running is the lifecycle's `ready`; from then on each change is one event."""
        now = self.ready
        if not was_running or self.state is not State.RUNNING:
            self._ready_reported = now
            return
        if now != self._ready_reported:
            self._ready_reported = now
            self.ctx.emit("readiness", service=self.name, ready=now, level="info")

    def _count_restart(self, reason: str) -> None:
        self._restarts[reason] += 1
        if lifecycle.counts_towards_budget(reason):
            self._restart_times.append(self.ctx.clock())
            # Pruned here too, not only when read: unread, it would grow by one entry per
            # restart for the pod's lifetime (found by the soak).
            self.recent_restarts()

    def _mark_done(self) -> None:
        task = self.spec.task
        if task is None or task.once != "volume":
            return
        # Only a once=volume task's success is written down, and only now (never on the boot's
        # path): coditect_init's atomic writes come with it.
        from start.taskstamp import write_stamp

        problem = write_stamp(self.ctx.logs_dir.parent, self.spec)
        if problem is not None:  # it ran and succeeded: only the next boot runs it again
            self.ctx.emit("task_stamp_failed", service=self.name, error=problem,
                          level="warning")

    def _await_dependencies(self, names: tuple[str, ...]) -> None:
        waiting = [self.ctx.services[n] for n in names if n in self.ctx.services]

        async def settled() -> None:
            await asyncio.gather(*(d.settled.wait() for d in waiting))
            self._waiting = None
            failed = tuple(d.failure() for d in waiting if d.failed)
            self._feed(lifecycle.DependenciesSettled(
                tuple(d.name for d in waiting if not d.ever_ready and not d.failed), failed))

        self._waiting = self.ctx.loop.create_task(settled())

    # -- spawning -----------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self._leftovers_remain():
            # What the last run left in its group was SIGKILLed; it must be gone (reaped by
            # us as its new parent) before the next run starts, or it could hold a port.
            self._timers.arm(Timer.LEFTOVERS, LEFTOVER_POLL)
            return
        try:
            # Spawned before the engine was imported (start.early): adopted, not spawned again.
            notify = self.ctx.notify.address if self.ctx.notify is not None else None
            proc = self.ctx.prespawned.pop(self.name, None) or spawn(
                self.spec, self.ctx.base_env, notify)
        except SpawnError as error:
            self._feed(lifecycle.SpawnFailed(str(error)))
            return
        self._proc = proc
        self._told = Told()
        wanted = self.spec.health.oom_score_adj
        if (wanted is not None and proc.oom_score_adj is not None
                and proc.oom_score_adj != wanted and not self._oom_refusal_said):
            self._oom_refusal_said = True  # once: a crash loop would say it at every spawn
            self.ctx.emit("oom_score_adj_refused", service=self.name, wanted=wanted,
                          got=proc.oom_score_adj, level="warning")
        if proc.ready_fd is not None:
            self._ready_fd = ReadyFd(self.ctx.loop, proc.ready_fd,
                                     functools.partial(self._fd_ready, proc))
        self.ctx.reaper.watch(proc.pid, functools.partial(self._on_reaped, proc))
        self._open_pumps(proc)
        self._feed(lifecycle.Spawned(proc.pid, proc.started_mono))

    def _leftovers_remain(self) -> bool:
        if self._leftovers is None:
            return False
        proc, deadline = self._leftovers
        if proc.leftovers() and self.ctx.clock() < deadline:
            return True
        if proc.leftovers():
            self.ctx.emit("leftovers_outlived_kill", service=self.name, group=proc.pid,
                          level="warning")
        self._leftovers = None
        return False

    def _open_pumps(self, proc: ChildProcess) -> None:
        if self._log is None:
            self._log = ServiceLog(
                self.ctx.logs_dir / f"{self.name}.log", self.spec.logfile_maxbytes,
                self.spec.logfile_backups,
                on_error=lambda message: self.ctx.emit("log_file_failed", service=self.name,
                                                       error=message, level="error"))
        for fd, stream in ((proc.stdout_fd, "stdout"), (proc.stderr_fd, "stderr")):
            if fd is not None:
                pump = Pump(self.ctx.loop, fd, service=self.name, stream=stream, pid=proc.pid,
                            log=self._log, console=self.ctx.console)
                pump.closed.add_done_callback(functools.partial(self._pump_done, pump, proc))
                self._pumps.append(pump)

    def _pump_done(self, pump: Pump, proc: ChildProcess, _closed: object) -> None:
        self._pumps.remove(pump)
        stream = proc.popen.stdout if pump.stream == "stdout" else proc.popen.stderr
        if stream is not None:
            stream.close()
        self._close_log_when_idle()

    def _fd_ready(self, proc: ChildProcess) -> None:
        self._ready_fd = None  # closed by itself
        if proc is self._proc:
            self._feed(lifecycle.ReadyPassed())

    def _on_reaped(self, proc: ChildProcess, status: int) -> None:
        for pump in list(self._pumps):  # what it wrote before it died goes out before `exited`
            if pump.pid == proc.pid:
                pump.catch_up()
        proc.mark_reaped(status)
        proc.kill_leftovers()  # grandchildren go before anything starts again
        self._leftovers = (proc, self.ctx.clock() + LEFTOVER_WAIT)
        if proc is not self._proc:
            return
        description, code = describe_status(status)
        if code == -signal.SIGKILL and self._oom_killed():
            description = OOM_KILLED
            self._oom_kills += 1
            self.ctx.emit("oom_killed", service=self.name, pid=proc.pid,
                          oom_score_adj=proc.oom_score_adj, level="warning")
        ran = self.ctx.clock() - proc.started_mono
        self._proc = None
        if self._ready_fd is not None:
            self._ready_fd.close()
            self._ready_fd = None
        waiters, self._stop_waiters = self._stop_waiters, []
        self._feed(lifecycle.Exited(description, code, ran))
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _oom_killed(self) -> bool:
        """Its process died of SIGKILL: whether the OOM killer sent it (start.oomkill). The
        counter is read even after a SIGKILL of our own (stopwaitsecs, the drain's deadline),
        so that a kill it counted meanwhile is not given to a later death."""
        oom = self.ctx.oom
        if oom is None or not oom.took():
            return False
        halt = self._phase.halt
        ours = self._phase.killed_at_deadline or (
            halt is not None and self.ctx.clock() >= halt.kill_at)
        return not ours

    # -- probes -------------------------------------------------------------------------------

    def _start_probes(self) -> None:
        # Boot speed: the probe machinery only when a service's first probe starts.
        from healthz.probes import ProbeLoop

        health = self.spec.health
        kinds: tuple[ProbeKind, ...] = ("ready", "live")
        runner = self.ctx.exec_runner
        for kind in kinds:
            spec = health.ready if kind == "ready" else health.live
            if spec.kind == "none" or spec.kind in SELF_REPORTED:
                continue  # self-reported readiness comes from start.notify, start.readyfd
            if spec.kind == "exec" and runner is None:
                # Never asyncio's child watcher: our reaper's waitpid(-1) would take its
                # statuses (a probe of `true` would read exit 255). One runner per service:
                # its probes get the secrets it names and no other (start.childenv).
                from start.childenv import probe_environment
                from start.execprobe import ReaperExecRunner

                runner = ReaperExecRunner(self.ctx.reaper,
                                          env=probe_environment(self.spec, self.ctx.base_env))
            loop = ProbeLoop(spec, health.interval, health.timeout,
                             on_result=functools.partial(self._on_probe, kind),
                             clock=self.ctx.clock, exec_runner=runner)
            self._probes[kind] = loop
            loop.start()

    def _stop_probes(self) -> None:
        probes, self._probes = self._probes, {}
        for probe in probes.values():
            task = self.ctx.loop.create_task(probe.stop())
            # Kept (the loop holds tasks only weakly) so that `stop` can wait for them.
            self._probe_stops.add(task)
            task.add_done_callback(self._probe_stops.discard)

    def _on_probe(self, kind: ProbeKind, result: ProbeResult) -> None:
        if self.ctx.metrics is not None:
            self.ctx.metrics.observe_probe(self.name, kind, result.duration, result.passed)
        if kind == "ready":
            was_running = self.state is State.RUNNING
            if self.ready:
                self._feed(lifecycle.ReadyPassed())
            self._report_flip(was_running)
            self._notify()  # readiness may have changed either way
            return
        probe = self._probes.get("live")
        if probe is not None and not result.passed:
            self._feed(lifecycle.LivenessFailed(probe.consecutive_failures, result.reason))
