"""The /v1 control routes, mounted on the unix socket only (docs/CONTROL_API.md).

Parameters in the query string, JSON out. A verb runs as a task of its own, shielded from the
request: a client that gives up (Ctrl-C on `podctl stop`) does not cut a stop in half, and
`?wait=0` answers 202 as soon as the order is handed to the engine.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from healthz.digits import ASCII_ONLY, foreign_digits, is_ascii_number
from healthz.eventfeed import EventFeed, Follower, encode
from healthz.kube import liveness_checks, readiness_checks
from healthz.logstream import MAX_LINES, LogStream
from healthz.model import Pod, RunRefused, ServiceSnapshot, UnknownService, VerbFailed
from healthz.names import is_service_name
from healthz.podctl_table import kind_of
from healthz.ports import ports
from healthz.proctree import ProcessTree
from healthz.run_request import MAX_BODY, parse_run_request
from healthz.seeding import NAME as SEEDING
from healthz.seeding import seeding_snapshot
from healthz.timeline import timeline
from healthz.top import top

log = structlog.get_logger("healthz.control")

T = TypeVar("T")

PREFIX = "/v1/"
# A follower whose socket takes nothing for this long is cut off (its queue is bounded anyway).
FOLLOW_WRITE_TIMEOUT = 10.0


class ControlError(Exception):
    """A request the API refuses; answered as ``{"error": message}`` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under /v1/ every refusal is JSON, including aiohttp's own 404 and 405."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except ControlError as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response(
            {"error": (exc.reason or "error").lower()}, status=exc.status, headers=headers
        )
    except Exception as exc:
        # An engine bug must not look like a dropped connection to podctl. This face is the
        # owner's, so the error's text may be told.
        log.error("control_request_crashed", path=request.path, exc_info=exc)
        return web.json_response({"error": f"internal error: {exc}"}, status=500)


def parse_signal(text: str) -> signal.Signals:
    """`HUP`, `SIGHUP`, `hup` or `1` → SIGHUP; anything else is a ValueError."""
    text = text.strip()
    if foreign_digits(text):
        raise ValueError(f"no signal named {text!r}; {ASCII_ONLY}")
    try:
        if is_ascii_number(text):
            return signal.Signals(int(text))
        name = text.upper()
        return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except (KeyError, ValueError):
        raise ValueError(f"no signal named {text!r}") from None


def _wait_flag(request: web.Request) -> bool:
    return _flag(request, "wait", default=True)


def _flag(request: web.Request, key: str, *, default: bool) -> bool:
    value = request.query.get(key, "1" if default else "0").lower()
    if value in ("1", "true", "yes", ""):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ControlError(400, f"{key} must be 0 or 1, not {value!r}")


class ControlRoutes:
    """Handlers of /v1/*: status, health and the verbs, all through the `Pod` protocol."""

    def __init__(self, pod: Pod, tree: ProcessTree, *, lag_limit: float,
                 feed: EventFeed) -> None:
        self._pod = pod
        self._tree = tree
        self._feed = feed
        self._lag_limit = lag_limit
        # Verbs in flight: kept referenced (asyncio holds tasks weakly) and cancelled when the
        # listener closes, so none outlives the loop unnoticed.
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()  # set on shutdown: log streams that follow end

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/v1/health", self.health)
        for verb in ("start", "stop", "restart", "signal"):
            app.router.add_post(f"/v1/services/{{name}}/{verb}", self.service_verb)
        app.router.add_post("/v1/reload", self.reload)
        app.router.add_post("/v1/run", self.run)
        app.router.add_get("/v1/check", self.check)
        app.router.add_get("/v1/logs/{name}", self.logs)
        app.router.add_get("/v1/top", self.top)
        app.router.add_get("/v1/ports", self.ports)
        app.router.add_get("/v1/timeline", self.timeline)
        app.router.add_get("/v1/events", self.events)
        # On shutdown, before aiohttp waits for handlers: a waiting request then answers at
        # once instead of holding the pod's exit for the whole shutdown timeout.
        app.on_shutdown.append(self._cancel_in_flight)

    async def status(self, request: web.Request) -> web.Response:
        snap = self._pod.snapshot()
        services = [self._service_status(s) for s in snap.services]
        self._tree.forget_dead()
        return web.json_response({
            "services": services,
            # /readyz's verdict, so that `podctl status` exits 0 exactly when it is 200.
            "ready": all(c.passed or not c.gating for c in readiness_checks(snap)),
            "draining": snap.draining,
            "started_up": snap.started_up,
            "booted_at": snap.booted_at,
            "reload_errors": list(snap.reload_errors),
            "home_problems": list(snap.home_problems),
            "notify_ignored": snap.notify_ignored,
            # The pod's own seeding of $CODITECT_HOME, as a task: `podctl status` lists it
            # first, the first thing the boot did. Beside the services, not among them: it
            # has no process, no log and no verbs.
            "seeding": self._service_status(seeding_snapshot(snap.home_problems)),
        })

    async def health(self, request: web.Request) -> web.Response:
        snap = self._pod.snapshot()
        ready = all(c.passed or not c.gating for c in readiness_checks(snap))
        live = all(c.passed for c in liveness_checks(snap, self._pod.loop_lag(), self._lag_limit))
        return web.json_response({
            "ready": ready,
            "live": live,
            "started_up": snap.started_up,
            "services": [
                {
                    "name": s.name,
                    "critical": s.critical,
                    "ready": s.ready,
                    "live": s.live,
                    "state": str(s.state),
                    "reason": s.reason,
                }
                for s in snap.services
            ],
        })

    async def service_verb(self, request: web.Request) -> web.Response:
        name = self._known_name(request.match_info["name"])
        verb = request.path.rsplit("/", 1)[1]
        wait = _wait_flag(request)
        call: Coroutine[Any, Any, str]
        if verb == "signal":
            try:
                signum = parse_signal(request.query.get("signal", ""))
            except ValueError as exc:
                raise ControlError(400, str(exc)) from None
            call = self._pod.signal_service(name, signum)
        elif verb == "start":
            call = self._pod.start_service(name)
        elif verb == "stop":
            call = self._pod.stop_service(name)
        else:
            call = self._pod.restart_service(name)
        task = self._spawn(call, f"{verb} {name}", detached=not wait)
        if not wait:
            accepted = {"ok": True, "message": f"{verb} {name}: accepted"}
            return web.json_response({**accepted, "service": self._status_of(name)}, status=202)
        try:
            message = await self._outcome(task)
            ok = True
        except VerbFailed as exc:
            message, ok = str(exc), False
        except UnknownService:
            # Gone between the check and the verb: a reload removed it.
            raise ControlError(404, f"no service named {name!r}") from None
        return web.json_response({"ok": ok, "message": message, "service": self._status_of(name)})

    async def reload(self, request: web.Request) -> web.Response:
        wait = _wait_flag(request)
        task = self._spawn(self._pod.reload(), "reload", detached=not wait)
        if not wait:
            return web.json_response({"ok": True, "messages": ["reload: accepted"]}, status=202)
        applied, messages = await self._outcome(task)
        return web.json_response({"ok": applied, "messages": list(messages)})

    async def run(self, request: web.Request) -> web.Response:
        """Add a transient service (`podctl run`); the body is the request. Always waits for
        the outcome: a refusal found on the way (no such executable) must reach the caller."""
        try:
            data = await request.json()
        except web.HTTPRequestEntityTooLarge:
            raise ControlError(413, "the command, directory and environment exceed "
                               f"{MAX_BODY // 1024} KiB") from None
        except ValueError:
            raise ControlError(400, "the body is not JSON") from None
        try:
            run = parse_run_request(data)
        except ValueError as exc:
            raise ControlError(400, str(exc)) from None
        task = self._spawn(self._pod.run_transient(run), f"run {run.name}", detached=False)
        try:
            message = await self._outcome(task)
            ok = True
        except VerbFailed as exc:
            message, ok = str(exc), False
        except RunRefused as exc:
            raise ControlError(409 if exc.conflict else 400, str(exc)) from None
        return web.json_response({"ok": ok, "message": message,
                                  "service": self._status_of(run.name)})

    async def check(self, request: web.Request) -> web.Response:
        """The engine's check of the catalogue the pod runs from: findings only."""
        found = await self._outcome(self._spawn(self._pod.check_catalogue(), "check",
                                                detached=False))
        return web.json_response({
            "valid": found.valid,
            "ran": found.ran,
            "problems": list(found.problems),
            "warnings": list(found.warnings),
            "notes": list(found.notes),
            "summary": found.summary,
            "catalogue": found.catalogue,
            "overlay": found.overlay,
        })

    async def logs(self, request: web.Request) -> web.StreamResponse:
        """A service's log file, read by the pod: the last `lines` (default 10), then with
        `follow=1` what comes, across rotation, until the client leaves."""
        name = request.match_info["name"]
        if not is_service_name(name):
            raise ControlError(400, f"bad service name {name!r}")
        lines_text = request.query.get("lines", "10")
        if not lines_text.isdigit() or int(lines_text) > MAX_LINES:
            raise ControlError(400, f"lines must be a whole number 0-{MAX_LINES}, "
                               f"not {lines_text!r}")
        follow = _flag(request, "follow", default=False)
        path = self._pod.log_path(name)

        def gap(message: str) -> None:
            log.warning("log_follow_gap", service=name, message=message)

        try:
            return await LogStream(path, self._closing, gap).serve(
                request, int(lines_text), follow)
        except FileNotFoundError:
            if self._pod.snapshot().service(name) is None:
                raise ControlError(404, f"no service named {name!r}") from None
            raise ControlError(404, f"no log for {name} yet at {path}") from None
        except OSError as exc:
            raise ControlError(500, f"cannot read {path}: {exc.strerror or exc}") from None

    async def top(self, request: web.Request) -> web.Response:
        """Each service's whole tree: CPU, memory, threads, open files, IO (`podctl top`)."""
        return web.json_response(top(self._pod, self._tree))

    async def ports(self, request: web.Request) -> web.Response:
        """The TCP ports listening in the pod, each with its owner (`podctl ports`)."""
        snap = self._pod.snapshot()
        mains = {s.name: self._pod.pids_of(s.name) for s in snap.services if s.pid is not None}
        found = ports(self._tree.census(), mains)
        return web.json_response({"ports": [
            {"address": p.address, "port": p.port, "service": p.service, "pid": p.pid,
             "via": p.via, "command": p.command} for p in found]})

    async def timeline(self, request: web.Request) -> web.Response:
        """The boot's critical chain (`podctl timeline`)."""
        return web.json_response(timeline(self._pod.snapshot(), self._feed))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The engine's recent events as JSON lines; with `follow=1`, then each as it happens
        until the client leaves or the pod ends the stream."""
        follow = _flag(request, "follow", default=False)
        # Both at once, with no await between: no event is lost or told twice in the seam.
        follower = self._feed.follow() if follow else None
        recent = self._feed.recent()
        try:
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                                   "Cache-Control": "no-store"})
            await response.prepare(request)
            try:
                if recent:
                    await asyncio.wait_for(response.write(b"".join(recent)),
                                           FOLLOW_WRITE_TIMEOUT)
                if follower is not None:
                    await self._follow(request, response, follower)
                await response.write_eof()
            except (ConnectionError, TimeoutError):
                # The client left, or took nothing for FOLLOW_WRITE_TIMEOUT: let it go.
                if request.transport is not None:
                    request.transport.close()
            return response
        finally:
            if follower is not None:
                self._feed.leave(follower)

    async def _follow(self, request: web.Request, response: web.StreamResponse,
                      follower: Follower) -> None:
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while True:
                woken = asyncio.ensure_future(follower.wakeup.wait())
                # Woken by an event or the shutdown; once a second regardless, to notice a
                # client that left while the pod was quiet.
                await asyncio.wait({woken, closing}, timeout=1.0,
                                   return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                lines = follower.take()
                if lines:
                    await asyncio.wait_for(response.write(b"".join(lines)),
                                           FOLLOW_WRITE_TIMEOUT)
                follower.written()
                if follower.dropped:
                    log.warning("event_follower_dropped", queued=follower.limit)
                    await asyncio.wait_for(response.write(encode({
                        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "event": "follower_dropped", "level": "warning",
                        "message": f"this reader fell {follower.limit} events behind; "
                                   "follow again to go on"})), FOLLOW_WRITE_TIMEOUT)
                    return
                if closing.done() or request.transport is None or \
                        request.transport.is_closing():
                    return
        finally:
            closing.cancel()

    def _known_name(self, name: str) -> str:
        if not is_service_name(name):
            raise ControlError(400, f"bad service name {name!r}")
        if self._pod.snapshot().service(name) is None:
            raise ControlError(404, f"no service named {name!r}")
        return name

    def _spawn(self, call: Coroutine[Any, Any, T], what: str, *, detached: bool) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(call, name=f"podctl {what}")
        self._tasks.add(task)

        def done(t: asyncio.Task[T]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()  # also marks it retrieved when the waiting client went away
            if exc is not None and detached:
                if isinstance(exc, (UnknownService, VerbFailed)):
                    log.warning("control_verb_failed", verb=what, error=str(exc))
                else:
                    log.error("control_verb_crashed", verb=what, exc_info=exc)

        task.add_done_callback(done)
        return task

    async def _outcome(self, task: asyncio.Task[T]) -> T:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and current.cancelling() == 0:
                # The listener is closing (see _cancel_in_flight), not this request: say so
                # rather than drop the connection.
                raise ControlError(503, "the pod is shutting down; outcome unknown") from None
            raise

    async def _cancel_in_flight(self, app: web.Application) -> None:
        self._closing.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    def _status_of(self, name: str) -> dict[str, object] | None:
        snap = self._pod.snapshot()
        svc = snap.service(name)
        if svc is None and name == SEEDING:
            svc = seeding_snapshot(snap.home_problems)
        return None if svc is None else self._service_status(svc)

    def _service_status(self, svc: ServiceSnapshot) -> dict[str, object]:
        running = svc.pid is not None
        usage = self._tree.usage(self._pod.pids_of(svc.name), svc.name) if running else None
        uptime = None
        if running and svc.started_at is not None:
            uptime = round(max(0.0, time.time() - svc.started_at), 3)
        return {
            "name": svc.name,
            "state": str(svc.state),
            "critical": svc.critical,
            "ready": svc.ready,
            "live": svc.live,
            "pid": svc.pid,
            "uptime_seconds": uptime,
            "restarts": svc.restarts,
            "restarts_by_reason": dict(svc.restarts_by_reason),
            "last_exit": svc.last_exit,
            "last_exit_code": svc.last_exit_code,
            "reason": svc.reason,
            "status": svc.status,
            "cpu_percent": None if usage is None else round(usage.cpu_percent, 1),
            "rss_bytes": None if usage is None else usage.rss_bytes,
            "transient": svc.transient,
            "kind": kind_of(svc.task, svc.transient),
            "failed": svc.failed,
        }
