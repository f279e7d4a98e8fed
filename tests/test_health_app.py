"""The Kubernetes faces (/livez, /readyz, /startupz, /health) through a pod's life, on both
listeners of a real HealthServer, with a scripted engine behind it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from healthz.model import State
from tests.health_support import (
    SECRET,
    Faces,
    FakePod,
    default_pod_services,
    running_faces,
    service,
)


@pytest.fixture
def pod() -> FakePod:
    return FakePod(default_pod_services())


async def health(faces: Faces, face: str) -> tuple[int, Any, str]:
    session, base = (faces.tcp, faces.tcp_url) if face == "tcp" else (faces.unix, "http://pod")
    async with session.get(base + "/health") as resp:
        return resp.status, json.loads(await resp.text()), resp.headers["Content-Type"]


async def test_booting_pod_is_live_but_not_started_or_ready(pod: FakePod, tmp_path: Path) -> None:
    """While the services start, /livez passes and /startupz, /readyz, /health fail."""
    async with running_faces(pod, tmp_path) as faces:
        assert await faces.get("tcp", "/livez") == (200, "ok\n")
        assert (await faces.get("tcp", "/startupz"))[0] == 503
        status, body = await faces.get("tcp", "/readyz")
        assert status == 503
        # A failure explains itself, without being asked for ?verbose.
        assert "[-]theia failed: reason withheld\n" in body
        assert "[-]nginx failed: reason withheld\n" in body
        assert body.endswith("readyz check failed\n")
        status, doc, ctype = await health(faces, "tcp")
        assert (status, doc["status"], ctype) == (503, "fail", "application/health+json")


async def test_ready_pod_passes_every_face(pod: FakePod, tmp_path: Path) -> None:
    """Once every service is ready: 200 `ok` everywhere and /health says pass."""
    pod.all_ready()
    async with running_faces(pod, tmp_path) as faces:
        for path in ("/livez", "/readyz", "/startupz"):
            assert await faces.get("tcp", path) == (200, "ok\n"), path
        status, body = await faces.get("tcp", "/readyz?verbose")
        assert status == 200
        assert body.splitlines() == [
            "[+]theia ok", "[+]coditect-v5-api ok", "[+]codi2 ok", "[+]file-monitor ok",
            "[+]nginx ok", "readyz check passed",
        ]
        status, doc, _ = await health(faces, "tcp")
        assert (status, doc["status"]) == (200, "pass")
        theia = doc["checks"]["theia:ready"][0]
        assert theia["status"] == "pass"
        assert theia["componentType"] == "service"
        assert theia["observedValue"] == "running"
        assert "time" in theia


async def test_non_critical_service_down_warns_and_stays_ready(
    pod: FakePod, tmp_path: Path
) -> None:
    """codi2 (not critical) failing: /readyz 200, its line shows [-], /health warns with 200."""
    pod.all_ready()
    pod.update("codi2", state=State.BACKOFF, ready=False, reason="exit 1: no pong")
    async with running_faces(pod, tmp_path) as faces:
        assert await faces.get("tcp", "/readyz") == (200, "ok\n")
        status, body = await faces.get("tcp", "/readyz?verbose")
        assert status == 200
        assert "[-]codi2 failed: reason withheld\n" in body
        assert body.endswith("readyz check passed\n")
        status, doc, _ = await health(faces, "tcp")
        assert (status, doc["status"]) == (200, "warn")
        assert doc["checks"]["codi2:ready"][0]["status"] == "warn"
        assert doc["checks"]["codi2:ready"][0]["observedValue"] == "backoff"


async def test_critical_service_down_fails(pod: FakePod, tmp_path: Path) -> None:
    """theia (critical) not ready: /readyz and /health are 503, /livez still 200."""
    pod.all_ready()
    pod.update("theia", ready=False, reason="probe: HTTP 500")
    async with running_faces(pod, tmp_path) as faces:
        status, body = await faces.get("tcp", "/readyz")
        assert status == 503
        assert "[-]theia failed: reason withheld" in body
        status, doc, _ = await health(faces, "tcp")
        assert (status, doc["status"]) == (503, "fail")
        assert await faces.get("tcp", "/livez") == (200, "ok\n")


async def test_drain_fails_readiness_at_once(pod: FakePod, tmp_path: Path) -> None:
    """The first snapshot that says draining turns /readyz and /health to 503."""
    pod.all_ready()
    async with running_faces(pod, tmp_path) as faces:
        assert (await faces.get("tcp", "/readyz"))[0] == 200
        pod.draining = True
        status, body = await faces.get("tcp", "/readyz")
        assert status == 503
        assert body.startswith("[-]shutdown failed: reason withheld\n")
        assert (await faces.get("tcp", "/readyz?exclude=shutdown"))[0] == 503
        status, body = await faces.get("unix", "/readyz")
        assert "[-]shutdown failed: the pod is draining" in body
        status, doc, _ = await health(faces, "tcp")
        assert (status, doc["status"]) == (503, "fail")
        assert doc["checks"]["pod:draining"][0]["observedValue"] is True
        # Each service's own verdict still says how it is while it stops.
        assert await faces.get("tcp", "/readyz/theia") == (200, "ok\n")


async def test_reasons_told_on_unix_only(pod: FakePod, tmp_path: Path) -> None:
    """The unix socket gives the real reason (one line); TCP says `reason withheld`."""
    pod.all_ready()
    pod.update("codi2", ready=False, reason="ws probe:\n  no pong within 2s")
    async with running_faces(pod, tmp_path) as faces:
        _, body = await faces.get("unix", "/readyz?verbose")
        assert "[-]codi2 failed: ws probe: no pong within 2s\n" in body
        _, body = await faces.get("tcp", "/readyz?verbose")
        assert "[-]codi2 failed: reason withheld\n" in body
        assert await faces.get("unix", "/readyz/codi2") == (
            503, "failed: ws probe: no pong within 2s\n"
        )
        _, doc, _ = await health(faces, "unix")
        assert doc["checks"]["codi2:ready"][0]["output"] == "ws probe: no pong within 2s"
        assert doc["output"] == "codi2: ws probe: no pong within 2s"
        _, doc, _ = await health(faces, "tcp")
        assert "output" not in doc
        assert "output" not in doc["checks"]["codi2:ready"][0]


async def test_exclude_skips_named_services(pod: FakePod, tmp_path: Path) -> None:
    """?exclude=NAME (repeatable) leaves services out of the verdict; unknown names warn."""
    pod.all_ready()
    pod.update("theia", ready=False)
    pod.update("nginx", ready=False)
    async with running_faces(pod, tmp_path) as faces:
        assert (await faces.get("tcp", "/readyz?exclude=theia"))[0] == 503
        assert await faces.get("tcp", "/readyz?exclude=theia&exclude=nginx") == (200, "ok\n")
        query = "exclude=theia&exclude=nginx&exclude=x&verbose"
        status, body = await faces.get("tcp", f"/readyz?{query}")
        assert status == 200
        assert "[+]theia excluded: ok\n" in body
        assert "[+]nginx excluded: ok\n" in body
        assert 'warn: some health checks cannot be excluded: no matches for "x"\n' in body
        assert (await faces.get("tcp", "/readyz?exclude=../etc"))[0] == 400


async def test_per_service_routes(pod: FakePod, tmp_path: Path) -> None:
    """/readyz/NAME and /livez/NAME answer for one service; unknown 404, malformed 400."""
    pod.all_ready()
    pod.update("codi2", ready=False, live=False, reason="no pong")
    async with running_faces(pod, tmp_path) as faces:
        assert await faces.get("tcp", "/readyz/theia") == (200, "ok\n")
        assert await faces.get("tcp", "/livez/theia") == (200, "ok\n")
        assert await faces.get("tcp", "/readyz/codi2") == (503, "failed: reason withheld\n")
        assert await faces.get("tcp", "/livez/codi2") == (503, "failed: reason withheld\n")
        assert await faces.get("tcp", "/readyz/nope") == (404, "no service named 'nope'\n")
        assert (await faces.get("tcp", "/livez/nope"))[0] == 404
        assert (await faces.get("tcp", "/readyz/..%2F..%2Fetc"))[0] in (400, 404)
        assert (await faces.get("tcp", "/readyz/.."))[0] in (400, 404)


async def test_livez_fails_on_loop_lag_and_spent_critical_budget(
    pod: FakePod, tmp_path: Path
) -> None:
    """A slow loop or a critical service out of restart budget fails /livez; others do not."""
    pod.all_ready()
    async with running_faces(pod, tmp_path, lag_limit=5.0) as faces:
        pod.lag = 7.5
        status, body = await faces.get("tcp", "/livez")
        assert status == 503
        assert "[-]loop failed: reason withheld" in body
        _, body = await faces.get("unix", "/livez")
        assert "[-]loop failed: event loop 7.5s late (limit 5s)" in body
        pod.lag = 0.01
        pod.update("codi2", budget_exhausted=True)  # not critical: the pod lives on
        assert await faces.get("tcp", "/livez") == (200, "ok\n")
        pod.update("theia", budget_exhausted=True)
        status, body = await faces.get("unix", "/livez")
        assert status == 503
        assert "[-]theia failed: restart budget used up" in body
        # /livez/NAME gives the same verdict for one service, even while its probe passes.
        assert await faces.get("tcp", "/livez/theia") == (503, "failed: reason withheld\n")
        assert await faces.get("unix", "/livez/theia") == (
            503, "failed: restart budget used up\n")


async def test_tcp_is_read_only_and_has_no_control_routes(pod: FakePod, tmp_path: Path) -> None:
    """POST, PUT, DELETE, PATCH get 405 everywhere on TCP; GET /v1/* is 404; HEAD works."""
    async with running_faces(pod, tmp_path) as faces:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/readyz", "/v1/services/theia/stop", "/v1/reload", "/nowhere"):
                async with faces.tcp.request(method, faces.tcp_url + path) as resp:
                    assert resp.status == 405, (method, path)
                    assert resp.headers["Allow"] == "GET,HEAD"
        for path in ("/v1/status", "/v1/health", "/v1/services/theia/stop"):
            assert (await faces.get("tcp", path))[0] == 404, path
        async with faces.tcp.head(faces.tcp_url + "/readyz") as resp:
            assert resp.status == 503
            assert await resp.read() == b""
        assert pod.calls == []


async def test_secrets_never_leave_through_tcp(pod: FakePod, tmp_path: Path) -> None:
    """A reason, exit text and restart reason holding a secret appear on unix, never on TCP."""
    pod.all_ready()
    for name in ("theia", "codi2"):
        pod.update(
            name, ready=False, live=False, budget_exhausted=True, reason=f"failed: {SECRET}",
            last_exit=f"exit 1 ({SECRET})", last_exit_code=1, restarts=3,
            restarts_by_reason={SECRET: 2, "liveness": 1},
        )
    pod.draining = True
    pod.lag = 9.0
    paths = [
        "/livez", "/livez?verbose", "/readyz", "/readyz?verbose", "/readyz?exclude=theia",
        "/startupz", "/health", "/metrics", "/readyz/theia", "/livez/theia", "/readyz/codi2",
        "/livez/codi2", "/readyz/nope", "/v1/status", "/v1/health", "/nowhere",
    ]
    async with running_faces(pod, tmp_path) as faces:
        for path in paths:
            async with faces.tcp.get(faces.tcp_url + path) as resp:
                text = await resp.text()
                assert "hunter2" not in text, path
                assert "hunter2" not in str(resp.headers), path
        for method in ("POST", "DELETE"):
            async with faces.tcp.request(method, faces.tcp_url + "/v1/status") as resp:
                assert "hunter2" not in await resp.text()
        # The same state does reach the private face, so the test above is not vacuous.
        _, body = await faces.get("unix", "/readyz?verbose")
        assert "hunter2" in body


async def test_health_document_shape(tmp_path: Path) -> None:
    """/health has the draft's shape: status, checks keyed NAME:ready and NAME:live, one entry
    each."""
    pod = FakePod([service("web"), service("side", critical=False, ready=False)])
    async with running_faces(pod, tmp_path) as faces:
        status, doc, ctype = await health(faces, "tcp")
        assert ctype == "application/health+json"
        assert status == 200
        assert doc["status"] == "warn"
        assert set(doc["checks"]) == {"web:ready", "web:live", "side:ready", "side:live",
                                      "pod:draining"}
        assert doc["checks"]["web:live"][0]["observedValue"] == 0
        assert doc["checks"]["web:live"][0]["observedUnit"] == "restarts in 600s"
        for entries in doc["checks"].values():
            assert len(entries) == 1
            assert entries[0]["status"] in ("pass", "warn", "fail")


async def test_health_live_shows_a_crash_loop_at_a_moment_it_is_up(tmp_path: Path) -> None:
    """A service that is ready right now but restarted lately warns on NAME:live; one past
    its budget fails it (critical) or warns (not critical). The TCP face tells the count and
    the status, never the last exit; the unix socket tells both."""
    pod = FakePod([
        service("web", recent_restarts=3, restart_window=60.0, restarts=3,
                last_exit=f"exit 1 {SECRET}"),
        service("side", critical=False, budget_exhausted=True, recent_restarts=9),
        service("calm", restarts=4, restarts_by_reason={"manual": 4}),
    ])
    async with running_faces(pod, tmp_path) as faces:
        status, doc, _ = await health(faces, "tcp")
        assert (status, doc["status"]) == (200, "warn")
        web = doc["checks"]["web:live"][0]
        assert (web["status"], web["observedValue"], web["observedUnit"]) == (
            "warn", 3, "restarts in 60s")
        assert doc["checks"]["web:ready"][0]["status"] == "pass"
        assert doc["checks"]["side:live"][0]["status"] == "warn"
        assert doc["checks"]["calm:live"][0]["status"] == "pass"  # an operator's restarts
        assert "output" not in web and "hunter2" not in json.dumps(doc)
        _, private, _ = await health(faces, "unix")
        assert private["checks"]["web:live"][0]["output"] == (
            f"3 restarts in 60s, last exit: exit 1 {SECRET}")
        assert private["checks"]["side:live"][0]["output"].startswith("restart budget used up")

        pod.update("web", budget_exhausted=True, recent_restarts=11)
        status, doc, _ = await health(faces, "tcp")
        assert (status, doc["status"]) == (503, "fail")
        assert doc["checks"]["web:live"][0]["status"] == "fail"

        pod.update("web", budget_exhausted=False, recent_restarts=0, live=False)
        _, doc, _ = await health(faces, "tcp")
        assert doc["checks"]["web:live"][0]["status"] == "warn"
