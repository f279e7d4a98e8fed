"""One service: its lifecycle state machine, restart policy and probes (docs/LIFECYCLE.md).

Every state change goes through `_enter`; everything else asks `state`, nobody keeps a copy.
All methods run on the event loop; the reaper calls `_on_reaped` from the SIGCHLD wakeup.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthz.model import ServiceSnapshot, State
from start.catalogue import ServiceSpec
from start.logs import Console, Pump, ServiceLog
from start.process import ChildProcess, SpawnError, group_exists, spawn
from start.reaper import Reaper, describe_status

BACKOFF_BASE = 0.5  # seconds before the second restart in a row; doubles from there
BACKOFF_CAP = 30.0  # never wait longer than this between attempts, never stop trying
STABLE_RUN = 10.0  # a run at least this long (and past startsecs) resets the backoff
# Restarts an operator asked for: counted by reason, but never towards restart_budget, which
# exists so the kubelet replaces a container the engine cannot heal.
OPERATOR_REASONS = frozenset({"manual", "reload"})
LEFTOVER_POLL = 0.005  # seconds between checks that a dead run's group is empty
LEFTOVER_WAIT = 2.0  # after this, start anyway (something in D state ignores SIGKILL) and say so


def backoff_delay(failures_in_a_row: int, base: float = BACKOFF_BASE,
                  cap: float = BACKOFF_CAP) -> float:
    """0 for the first restart (a crash after a stable run comes back at once), then 0.5 s,
    1 s, 2 s … up to the cap: a crash loop never spins at full speed."""
    if failures_in_a_row <= 1:
        return 0.0
    return float(min(cap, base * 2 ** min(failures_in_a_row - 2, 32)))


@dataclass
class EngineContext:
    """What every service shares: handed in, so tests can swap any of it."""

    loop: asyncio.AbstractEventLoop
    reaper: Reaper
    console: Console
    emit: Callable[..., None]  # the supervisor's own event log
    logs_dir: Path
    base_env: dict[str, str]
    exec_runner: Any = None  # healthz.probes.ExecRunner; None: a ReaperExecRunner on `reaper`
    metrics: Any = None  # healthz.metrics.PodMetrics once the health service is up
    clock: Callable[[], float] = time.monotonic
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP
    stable_run: float = STABLE_RUN
    services: dict[str, Service] = field(default_factory=dict)
    # Spawned before the engine (start.early), by name; the boot adopts them.
    prespawned: dict[str, ChildProcess] = field(default_factory=dict)


class Service:
    def __init__(self, spec: ServiceSpec, ctx: EngineContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.state = State.STOPPED
        self.want_running = False
        self.proc: ChildProcess | None = None
        self.reason = ""
        self.restarts = 0
        self.restarts_by_reason: Counter[str] = Counter()
        self.failures_in_a_row = 0
        self.failed_starts = 0
        self.last_exit: str | None = None
        self.last_exit_code: int | None = None
        self.ready_since_spawn = False
        self.ever_ready = False
        self.settled = asyncio.Event()  # ready once, or gave up waiting: dependents may start
        self._restart_times: deque[float] = deque()
        self._pending_restart_reason: str | None = None
        self._failed_start_kill = False
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._stop_waiters: list[asyncio.Future[None]] = []
        self._start_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # set (and replaced) on every state or ready change
        self._pumps: list[Pump] = []
        self._probes: dict[str, Any] = {}
        self._probe_stops: set[asyncio.Task[None]] = set()
        self._log: ServiceLog | None = None
        self._kill_is_deadline = False
        self._leftover_group: int | None = None  # the last run's group, until it is empty
        self._leftover_deadline = 0.0
        self.killed_at_deadline = False  # the drain deadline, not stopwaitsecs, forced SIGKILL

    # -- what others ask ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ready(self) -> bool:
        if self.proc is None or self.state not in (State.STARTING, State.RUNNING):
            return False
        probe = self._probes.get("ready")
        if probe is None:
            return self.state is State.RUNNING
        from healthz.probe_loop import STALE_AFTER_INTERVALS  # imported with the probe

        last = probe.last
        if last is None or not (last.passed or self.ready_since_spawn):
            return False
        # A result older than three intervals counts as failed (a hung probe); short of that,
        # it takes `failures` failures in a row to make a service that was ready unready.
        if self.ctx.clock() - last.at > STALE_AFTER_INTERVALS * probe.interval:
            return False
        return bool(probe.consecutive_failures < self.spec.health.failures)

    @property
    def live(self) -> bool:
        probe = self._probes.get("live")
        return probe is None or probe.consecutive_failures < self.spec.health.failures

    def budget_exhausted(self) -> bool:
        budget = self.spec.health.restart_budget
        if budget is None:
            return False
        horizon = self.ctx.clock() - budget.window
        while self._restart_times and self._restart_times[0] < horizon:
            self._restart_times.popleft()
        return len(self._restart_times) > budget.count

    def snapshot(self) -> ServiceSnapshot:
        ready = self.ready
        reason = self.reason
        if not ready and not reason and self.proc is not None:
            last = getattr(self._probes.get("ready"), "last", None)
            reason = f"readiness probe: {last.reason}" if last is not None else "not ready yet"
        elif not ready and not reason:
            reason = self.state.value  # stopped, exited: the state is the reason
        return ServiceSnapshot(
            name=self.name,
            state=self.state,
            critical=self.spec.health.critical,
            ready=ready,
            live=self.live,
            pid=self.proc.pid if self.proc else None,
            started_at=self.proc.started_at if self.proc else None,
            restarts=self.restarts,
            restarts_by_reason=dict(self.restarts_by_reason),
            last_exit=self.last_exit,
            last_exit_code=self.last_exit_code,
            reason="" if ready else reason,
            budget_exhausted=self.budget_exhausted(),
            log_write_failures=self._log.failures if self._log is not None else 0,
        )

    # -- verbs --------------------------------------------------------------------------------

    def request_start(self, dependencies: list[Service]) -> None:
        """Run it (again), after its dependencies have settled."""
        self.want_running = True
        self.failed_starts = 0
        if self.state in (State.STARTING, State.RUNNING):
            return
        if self.state is State.STOPPING:
            return  # `_on_reaped` spawns again because want_running is set
        if self._start_task is not None:
            self._start_task.cancel()  # WAITING: wait again, for what `after` names now
        self._cancel_timer("backoff")
        waiting = [d for d in dependencies if d.want_running and not d.settled.is_set()]
        if not waiting:
            self._spawn()
            return
        self._enter(State.WAITING, "waiting for " + ", ".join(d.name for d in waiting))
        self._start_task = self.ctx.loop.create_task(self._start_after(waiting))

    async def _start_after(self, waiting: list[Service]) -> None:
        await asyncio.gather(*(d.settled.wait() for d in waiting))
        if self.want_running and self.state is State.WAITING:
            late = [d.name for d in waiting if not d.ever_ready]
            if late:
                self.ctx.emit("starting_anyway", service=self.name, not_ready=late,
                              level="warning")
            self._spawn()

    async def stop(self, deadline: float | None = None) -> None:
        """Stop it and wait until its process is gone (SIGKILL at stopwaitsecs or deadline)."""
        self.want_running = False
        self._pending_restart_reason = None
        self._cancel_timer("backoff")
        self._cancel_timer("leftovers")
        self._cancel_timer("settle")
        if self._start_task is not None:
            self._start_task.cancel()
        if self.proc is None:
            if self.state is not State.EXITED:
                self._enter(State.STOPPED, "")
            self.settled.set()
        else:
            await self._begin_stop(deadline)
        if self._probe_stops:  # nothing of a probe (an exec probe's process) outlives a stop
            await asyncio.wait(set(self._probe_stops))

    def restart(self, reason: str, dependencies: list[Service]) -> asyncio.Future[None] | None:
        """Stop the process (if any) and start it again; counted under `reason`."""
        self._count_restart(reason)
        if self.proc is None:
            self.request_start(dependencies)
            return None
        self.want_running = True
        self._pending_restart_reason = reason
        return self._begin_stop(None)

    def reconfigure(self, spec: ServiceSpec) -> asyncio.Future[None] | None:
        """Take a spec changed by a reload. A running process is stopped the way it was started
        (its own stopsignal and stopwaitsecs) and comes back under the new spec."""
        if self.proc is None:
            self.spec = spec
            return self.restart("reload", self.dependencies()) if self.want_running else None
        stopping = self.restart("reload", self.dependencies())
        self.spec = spec  # `_on_reaped` spawns under it
        return stopping

    def send_signal(self, signum: int) -> bool:
        return self.proc is not None and self.proc.signal_group(signum)

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    # -- spawning -----------------------------------------------------------------------------

    def _spawn(self) -> None:
        self._cancel_timer("backoff")
        if not self.settled.is_set() and "settle" not in self._timers:
            # Dependents wait at most start_timeout from the first attempt, across restarts:
            # each spawn's own timer dies with a process that never lives that long.
            self._set_timer("settle", self.spec.health.start_timeout, self._gave_up_settling)
        if self._leftovers_remain():
            # What the last run left in its group was SIGKILLed; it must be gone (reaped by
            # us as its new parent) before the next run starts, or it could hold a port.
            self._set_timer("leftovers", LEFTOVER_POLL, self._spawn_after_leftovers)
            return
        self.ready_since_spawn = False
        try:
            # Spawned before the engine was imported (start.early): adopted, not spawned again.
            proc = self.ctx.prespawned.pop(self.name, None) or spawn(self.spec, self.ctx.base_env)
        except SpawnError as error:
            self.ctx.emit("spawn_failed", service=self.name, error=str(error), level="error")
            self.last_exit, self.last_exit_code = f"spawn failed: {error}", None
            self._after_failed_start(f"spawn failed: {error}")
            return
        self.proc = proc
        self.ctx.reaper.watch(proc.pid, functools.partial(self._on_reaped, proc))
        self._open_pumps(proc)
        self._enter(State.STARTING, "")
        self.ctx.emit("spawned", service=self.name, pid=proc.pid)
        self._start_probes()  # before RUNNING: with a probe, running is not yet ready
        if "ready" in self._probes:  # without one, startsecs alone decides a failed start
            self._set_timer("start_timeout", self.spec.health.start_timeout,
                            self._start_timed_out, proc)
        if self.spec.startsecs <= 0:
            self._past_startsecs(proc)
        else:
            self._set_timer("startsecs", self.spec.startsecs, self._past_startsecs, proc)

    def _leftovers_remain(self) -> bool:
        group = self._leftover_group
        if group is None:
            return False
        if group_exists(group) and self.ctx.clock() < self._leftover_deadline:
            return True
        if group_exists(group):
            self.ctx.emit("leftovers_outlived_kill", service=self.name, group=group,
                          level="warning")
        self._leftover_group = None
        return False

    def _spawn_after_leftovers(self) -> None:
        if self.want_running and self.proc is None:
            self._spawn()

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

    def close_pumps(self) -> None:
        for pump in list(self._pumps):
            pump.close()

    def _past_startsecs(self, proc: ChildProcess) -> None:
        if proc is not self.proc or self.state is not State.STARTING:
            return
        self._enter(State.RUNNING, "")
        self._check_ready()

    def _start_timed_out(self, proc: ChildProcess) -> None:
        if proc is not self.proc or self.ready_since_spawn or self.state is State.STOPPING:
            return
        timeout = self.spec.health.start_timeout
        self.ctx.emit("start_timeout", service=self.name, seconds=timeout, level="warning")
        self.settled.set()  # dependents start anyway: a broken dependency never blocks the pod
        self._failed_start_kill = True
        self.reason = f"not ready within start_timeout ({timeout:g}s)"
        self._begin_stop(None, keep_state_reason=True)

    def _gave_up_settling(self) -> None:
        if not self.settled.is_set():
            self.ctx.emit("not_ready_in_time", service=self.name,
                          seconds=self.spec.health.start_timeout, level="warning")
            self.settled.set()  # dependents start anyway: a broken dependency never blocks

    # -- probes -------------------------------------------------------------------------------

    def _start_probes(self) -> None:
        from healthz.probes import ProbeLoop

        health = self.spec.health
        for kind, spec in (("ready", health.ready), ("live", health.live)):
            if spec.kind == "none":
                continue
            if spec.kind == "exec" and self.ctx.exec_runner is None:
                # Never asyncio's child watcher: our reaper's waitpid(-1) would take its
                # statuses (a probe of `true` would read exit 255).
                from start.execprobe import ReaperExecRunner

                self.ctx.exec_runner = ReaperExecRunner(self.ctx.reaper)
            loop = ProbeLoop(spec, health.interval, health.timeout,
                             on_result=functools.partial(self._on_probe, kind),
                             clock=self.ctx.clock, exec_runner=self.ctx.exec_runner)
            self._probes[kind] = loop
            loop.start()

    def _stop_probes(self) -> None:
        probes, self._probes = self._probes, {}
        for probe in probes.values():
            task = self.ctx.loop.create_task(probe.stop())
            # Kept (the loop holds tasks only weakly) so that `stop` can wait for them.
            self._probe_stops.add(task)
            task.add_done_callback(self._probe_stops.discard)

    def _on_probe(self, kind: str, result: Any) -> None:
        if self.ctx.metrics is not None:
            self.ctx.metrics.observe_probe(self.name, kind, result.duration, result.passed)
        if kind == "ready":
            self._check_ready()
            self._notify()  # readiness may have changed either way
            return
        probe = self._probes.get("live")
        started = self.proc.started_mono if self.proc else self.ctx.clock()
        in_window = (not self.ready_since_spawn
                     and self.ctx.clock() - started < self.spec.health.start_timeout)
        if (probe is None or result.passed or in_window or self.state is State.STOPPING
                or probe.consecutive_failures < self.spec.health.failures):
            return
        self.reason = f"liveness probe failed {probe.consecutive_failures} times: {result.reason}"
        self.ctx.emit("liveness_failed", service=self.name, failures=probe.consecutive_failures,
                      level="warning")
        self.restart("liveness", self.dependencies())

    def _check_ready(self) -> None:
        if self.ready and not self.ready_since_spawn:
            self.ready_since_spawn = True
            self.ever_ready = True
            self.reason = ""
            self._cancel_timer("start_timeout")
            self._cancel_timer("settle")
            self.settled.set()
            self.ctx.emit("ready", service=self.name)
            if self.state is State.STARTING and self.spec.startsecs <= 0:
                self._enter(State.RUNNING, "")

    def dependencies(self) -> list[Service]:
        return [self.ctx.services[n] for n in self.spec.after if n in self.ctx.services]

    # -- stopping and exits -------------------------------------------------------------------

    def _begin_stop(self, deadline: float | None,
                    keep_state_reason: bool = False) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = self.ctx.loop.create_future()
        self._stop_waiters.append(waiter)
        proc = self.proc
        assert proc is not None
        grace = self.spec.stopwaitsecs
        if deadline is not None and deadline - self.ctx.clock() < grace:
            grace = max(0.0, deadline - self.ctx.clock())
            self._kill_is_deadline = True
        if self.state is not State.STOPPING:
            self._enter(State.STOPPING, self.reason if keep_state_reason else "")
            self.ctx.emit("stopping", service=self.name, pid=proc.pid,
                          signal=signal.Signals(self.spec.stopsignal).name)
            proc.signal_group(self.spec.stopsignal)
            proc.signal_group(signal.SIGCONT)  # a stopped (hung) process must see the signal
            self._set_timer("kill", grace, self._kill, proc)
        elif deadline is not None:
            # Already stopping (e.g. a restart) when the drain began: keep the earlier SIGKILL.
            current = self._timers.get("kill")
            if current is None or current.when() > self.ctx.loop.time() + grace:
                self._set_timer("kill", grace, self._kill, proc)
        return waiter

    def _kill(self, proc: ChildProcess) -> None:
        if proc is self.proc:
            self.killed_at_deadline = self.killed_at_deadline or self._kill_is_deadline
            self.ctx.emit("killed", service=self.name, pid=proc.pid, level="warning",
                          cause="drain deadline" if self._kill_is_deadline else "stopwaitsecs")
            proc.signal_group(signal.SIGKILL)

    def _on_reaped(self, proc: ChildProcess, status: int) -> None:
        proc.mark_reaped(status)
        proc.kill_leftovers()  # grandchildren go before anything starts again
        self._leftover_group = proc.pid
        self._leftover_deadline = self.ctx.clock() + LEFTOVER_WAIT
        if proc is not self.proc:
            return
        description, code = describe_status(status)
        ran = self.ctx.clock() - proc.started_mono
        self.proc = None
        self.last_exit, self.last_exit_code = description, code
        for name in ("startsecs", "start_timeout", "kill"):
            self._cancel_timer(name)
        self._stop_probes()
        was = self.state
        self.ctx.emit("exited", service=self.name, pid=proc.pid, status=description,
                      ran_seconds=round(ran, 3))
        if ran >= max(self.ctx.stable_run, self.spec.startsecs) and was is not State.STARTING:
            self.failures_in_a_row = 0
            self.failed_starts = 0
        waiters, self._stop_waiters = self._stop_waiters, []

        if was is State.STOPPING and not self._failed_start_kill:
            if self.want_running:  # a restart: come back at once
                self._pending_restart_reason = None
                self._spawn()
            else:
                self._enter(State.STOPPED, "")
                self.settled.set()
        elif was is State.STARTING or self._failed_start_kill:
            self._after_failed_start(self.reason or f"{description} before startsecs "
                                     f"({self.spec.startsecs:g}s)")
        else:
            self._after_running_exit(code, description)
        self._failed_start_kill = False
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _after_failed_start(self, reason: str) -> None:
        self.failed_starts += 1
        self.failures_in_a_row += 1
        if not self.want_running:
            self._enter(State.STOPPED, reason)
            return
        if self.failed_starts > self.spec.startretries:
            cap = self.ctx.backoff_cap
            self._schedule_restart("crash", cap, State.FATAL,
                                   f"{reason}; failed to start {self.failed_starts} times in a "
                                   f"row, retrying every {cap:g}s")
        else:
            self._schedule_restart("crash", self._delay(),
                                   State.BACKOFF, reason)

    def _after_running_exit(self, code: int, description: str) -> None:
        expected = code in self.spec.exitcodes
        policy = self.spec.autorestart
        if not self.want_running or policy == "false" or (policy == "unexpected" and expected):
            self.want_running = False
            self._enter(State.EXITED, "" if expected else f"{description} (not restarted: "
                        f"autorestart={policy})")
            self.settled.set()
            return
        self.failures_in_a_row += 1
        self._schedule_restart("exit" if expected else "crash",
                               self._delay(), State.BACKOFF,
                               description)

    def _schedule_restart(self, reason: str, delay: float, state: State, why: str) -> None:
        self._count_restart(reason)
        self._enter(state, why)
        self.ctx.emit("backoff", service=self.name, delay_seconds=delay, reason=why,
                      level="warning" if state is State.BACKOFF else "error")
        if delay <= 0:
            self._spawn()
        else:
            self._set_timer("backoff", delay, self._spawn_if_wanted)

    def _delay(self) -> float:
        return backoff_delay(self.failures_in_a_row, self.ctx.backoff_base, self.ctx.backoff_cap)

    def _spawn_if_wanted(self) -> None:
        if self.want_running and self.state in (State.BACKOFF, State.FATAL):
            self._spawn()

    def _count_restart(self, reason: str) -> None:
        self.restarts += 1
        self.restarts_by_reason[reason] += 1
        # Only a budget reads this history (and prunes it): without one, keeping it would
        # grow by one entry per restart for the pod's lifetime (found by the soak).
        if reason not in OPERATOR_REASONS and self.spec.health.restart_budget is not None:
            self._restart_times.append(self.ctx.clock())

    # -- plumbing -----------------------------------------------------------------------------

    def _enter(self, state: State, reason: str) -> None:
        self.state = state
        self.reason = reason
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

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

    def _set_timer(self, name: str, delay: float, callback: Callable[..., None],
                   *args: Any) -> None:
        self._cancel_timer(name)
        self._timers[name] = self.ctx.loop.call_later(delay, callback, *args)

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
