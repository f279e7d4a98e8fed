"""The Kubernetes faces: /livez, /readyz, /startupz, /health, /metrics (both listeners).

Every answer is computed from ``pod.snapshot()``, which the engine keeps current; no handler
waits on a probe or on a child. The verdicts are the Kubernetes API server's conventions
(``ok``, ``[+]name ok`` lines, ``?verbose``, ``?exclude=``), so operators read them as usual.

On the public (TCP) face a failing check says ``reason withheld``: reasons can quote a child's
error output, which may carry a path, a URL with a token, or worse.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from healthz.metrics_deferred import Metrics
from healthz.model import Pod, PodSnapshot, ServiceSnapshot
from healthz.names import is_service_name

WITHHELD = "reason withheld"
HEALTH_JSON = "application/health+json"
# Probers and proxies must never answer from a cache: the point is the state now.
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of a verbose answer."""

    name: str
    passed: bool
    reason: str = ""  # why it failed; shown on the private face only
    gating: bool = True  # whether a failure fails the whole answer


def readiness_checks(snap: PodSnapshot) -> list[Check]:
    """Every service, critical ones gating; a drain fails readiness before anything stops."""
    checks = [Check(s.name, s.ready, _not_ready_reason(s), s.critical) for s in snap.services]
    if snap.draining:
        checks.insert(0, Check("shutdown", False, "the pod is draining"))
    return checks


def liveness_checks(snap: PodSnapshot, lag: float, lag_limit: float) -> list[Check]:
    """The loop, and each critical service's restart budget (the only service-level kill)."""
    checks = [Check("loop", lag < lag_limit, f"event loop {lag:.1f}s late (limit {lag_limit:g}s)")]
    checks += [
        Check(s.name, not s.budget_exhausted, "restart budget used up")
        for s in snap.services
        if s.critical
    ]
    return checks


def _not_ready_reason(svc: ServiceSnapshot) -> str:
    return svc.reason or f"not ready ({svc.state})"


def _flag(request: web.Request, key: str) -> bool:
    value = request.query.get(key)
    return value is not None and value.lower() not in ("0", "false", "no")


class KubeFaces:
    """Handlers of the Kubernetes routes for one listener; `private` decides what is told."""

    def __init__(self, pod: Pod, metrics: Metrics, *, private: bool, lag_limit: float) -> None:
        self._pod = pod
        self._metrics = metrics
        self._private = private
        self._lag_limit = lag_limit

    def add_routes(self, app: web.Application) -> None:
        # add_get also answers HEAD, which is what a cheap prober or `curl -I` sends.
        app.router.add_get("/livez", self.livez)
        app.router.add_get("/livez/{name}", self.livez_one)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/readyz/{name}", self.readyz_one)
        app.router.add_get("/startupz", self.startupz)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)

    async def livez(self, request: web.Request) -> web.Response:
        checks = liveness_checks(self._pod.snapshot(), self._pod.loop_lag(), self._lag_limit)
        return self._verdict(request, "livez", checks)

    async def readyz(self, request: web.Request) -> web.Response:
        snap = self._pod.snapshot()
        excluded: set[str] = set()
        for name in request.query.getall("exclude", []):
            if not is_service_name(name):
                raise web.HTTPBadRequest(text="bad service name in exclude\n")
            excluded.add(name)
        # Only services can be excluded: a drain must fail /readyz whatever the query says.
        names = {s.name for s in snap.services}
        checks = readiness_checks(snap)
        return self._verdict(request, "readyz", checks, excluded & names, sorted(excluded - names))

    async def livez_one(self, request: web.Request) -> web.Response:
        # The same verdict /livez gives this service: its probe, and its restart budget.
        svc = self._service(request)
        if svc.budget_exhausted:
            return self._one(Check(svc.name, False, "restart budget used up"))
        return self._one(Check(svc.name, svc.live, svc.reason or "liveness probe failing"))

    async def readyz_one(self, request: web.Request) -> web.Response:
        # One service's own readiness: a drain makes /readyz fail, not each service's verdict.
        svc = self._service(request)
        return self._one(Check(svc.name, svc.ready, _not_ready_reason(svc)))

    async def startupz(self, request: web.Request) -> web.Response:
        snap = self._pod.snapshot()
        if snap.started_up:
            return _text(200, "ok\n")
        # What failed for good (a task, what it held back) is named, so that a pod stuck in
        # start-up says what to look at; its reason only on the private face.
        lines = [f"[-]{s.name} failed: {self._told(_not_ready_reason(s))}"
                 for s in snap.services if s.failed and s.critical]
        return _text(503, "".join(line + "\n" for line in lines) + "startupz check failed\n")

    async def health(self, request: web.Request) -> web.Response:
        status, doc = health_document(self._pod.snapshot(), private=self._private)
        return web.Response(
            status=503 if status == "fail" else 200,
            body=json.dumps(doc, indent=2).encode() + b"\n",
            content_type=HEALTH_JSON,
            headers=NO_STORE,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=self._metrics.render(), headers=NO_STORE)
        # Set raw: the exposition type carries `version=` and `charset=` parameters that
        # aiohttp's content_type/charset split would not keep together.
        resp.headers["Content-Type"] = self._metrics.content_type
        return resp

    def _service(self, request: web.Request) -> ServiceSnapshot:
        name = request.match_info["name"]
        if not is_service_name(name):
            raise web.HTTPBadRequest(text="bad service name\n")
        svc = self._pod.snapshot().service(name)
        if svc is None:
            raise web.HTTPNotFound(text=f"no service named {name!r}\n")
        return svc

    def _one(self, check: Check) -> web.Response:
        if check.passed:
            return _text(200, "ok\n")
        return _text(503, f"failed: {self._told(check.reason)}\n")

    def _verdict(
        self,
        request: web.Request,
        what: str,
        checks: Iterable[Check],
        excluded: Collection[str] = (),
        unmatched: Iterable[str] = (),
    ) -> web.Response:
        lines: list[str] = []
        passed = True
        for check in checks:
            if check.name in excluded:
                lines.append(f"[+]{check.name} excluded: ok")
            elif check.passed:
                lines.append(f"[+]{check.name} ok")
            else:
                lines.append(f"[-]{check.name} failed: {self._told(check.reason)}")
                passed = passed and not check.gating
        lines += [
            f'warn: some health checks cannot be excluded: no matches for "{name}"'
            for name in unmatched
        ]
        # As the API server does: a failure always explains itself, success only on request.
        if passed and not _flag(request, "verbose"):
            return _text(200, "ok\n")
        lines.append(f"{what} check {'passed' if passed else 'failed'}")
        return _text(200 if passed else 503, "\n".join(lines) + "\n")

    def _told(self, reason: str) -> str:
        return _one_line(reason) if self._private else WITHHELD


def health_document(snap: PodSnapshot, *, private: bool) -> tuple[str, dict[str, object]]:
    """The aggregate in the IETF health-check draft's shape, and its status.

    Per service NAME:ready and NAME:live. pass: every service ready and live without recent
    restarts; warn: only non-critical services are not ready, or a service restarted lately
    or fails its liveness probe; fail: a critical one is not ready or is past its restart
    budget, or the pod is draining. `output` (the reasons) only on the private face.
    """
    now = datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="seconds")
    checks: dict[str, list[dict[str, object]]] = {}
    outputs: list[str] = []
    worst = "pass"
    for svc in snap.services:
        status = "pass" if svc.ready else "fail" if svc.critical else "warn"
        entry: dict[str, object] = {
            "componentId": svc.name,
            "componentType": "service",
            "observedValue": str(svc.state),
            "status": status,
            "time": now,
        }
        if private and status != "pass":
            entry["output"] = _one_line(_not_ready_reason(svc))
            outputs.append(f"{svc.name}: {entry['output']}")
        checks[f"{svc.name}:ready"] = [entry]
        worst = _worse(worst, status)
        live = _liveness_entry(svc, now, private)
        if "output" in live:
            outputs.append(f"{svc.name}: {live['output']}")
        checks[f"{svc.name}:live"] = [live]
        worst = _worse(worst, str(live["status"]))
    checks["pod:draining"] = [{
        "componentType": "system",
        "observedValue": snap.draining,
        "status": "fail" if snap.draining else "pass",
        "time": now,
    }]
    if snap.home_problems:
        # Degraded, not failed: the services run, only their log files are missing.
        home: dict[str, object] = {"componentType": "system", "status": "warn", "time": now,
                                   "observedValue": len(snap.home_problems)}
        if private:
            home["output"] = _one_line("; ".join(snap.home_problems))
            outputs.append(f"home: {home['output']}")
        checks["pod:home"] = [home]
        worst = _worse(worst, "warn")
    if snap.draining:
        worst = "fail"
        outputs.insert(0, "the pod is draining")
    doc: dict[str, object] = {"status": worst, "description": "coditect-pod", "checks": checks}
    if private and outputs:
        doc["output"] = "; ".join(outputs)
    return worst, doc


def _liveness_entry(svc: ServiceSnapshot, now: str, private: bool) -> dict[str, object]:
    """A service's liveness beside its readiness, so that one that keeps crashing shows even
    at a moment it happens to be up. fail: a critical service past its restart budget (what
    fails /livez); warn: a non-critical one past it, a failing liveness probe, or restarts
    (crash, exit, liveness) inside the window. Counts only on the public face."""
    if svc.budget_exhausted:
        status = "fail" if svc.critical else "warn"
    elif not svc.live or svc.recent_restarts:
        status = "warn"
    else:
        status = "pass"
    entry: dict[str, object] = {
        "componentId": svc.name,
        "componentType": "service",
        "observedValue": svc.recent_restarts,
        "observedUnit": f"restarts in {svc.restart_window:g}s",
        "status": status,
        "time": now,
    }
    if private and status != "pass":
        said = ["restart budget used up"] if svc.budget_exhausted else []
        said += [] if svc.live else ["liveness probe failing"]
        said += [f"{svc.recent_restarts} restarts in {svc.restart_window:g}s"]
        if svc.last_exit:
            said.append(f"last exit: {svc.last_exit}")
        entry["output"] = _one_line(", ".join(said))
    return entry


_RANK = {"pass": 0, "warn": 1, "fail": 2}


def _worse(a: str, b: str) -> str:
    return a if _RANK[a] >= _RANK[b] else b


def _one_line(text: str) -> str:
    # A reason may be a child's multi-line error; a verbose answer is one line per check.
    return " ".join(text.split())


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, headers=NO_STORE)
