"""Hot reload end to end against a running demo pod: the real engine, the demo overlay, the
stand-ins and the real nginx, started from a copy of the production catalogue (the tracked
files are never edited). On the copy: add, remove and change services, an invalid edit, and an
editor's save; theia, nginx and coditect-v5-api keep their first pid throughout.

The pod uses the demo's fixed ports, so it runs alone, after or before test_demo_pod's (pytest
runs the files one after another) and is skipped where those ports are taken.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from bench.wait import holds_for
from tests.demo_support import Demo, all_gone, running_demo
from tests.support import ROOT, free_port, wait_for

DEBOUNCE_QUIET = 1.5  # three debounce windows (start.watch.DEBOUNCE): time for a second reload
UNCHANGED = ("theia", "nginx", "coditect-v5-api")


def _extra_api(port: int) -> str:
    """A second API stand-in on a free port, with a readiness probe of its own."""
    return (f"[program:api-extra]\n"
            f"command={ROOT / 'demo' / 'standins' / 'api-standin'} --port {port}\n"
            "startsecs=0\n\n"
            "[health:api-extra]\n"
            f"ready=http://127.0.0.1:{port}/api/v5/health\n"
            "interval=1s\n"
            "critical=false\n"
            # The stand-in needs the API's secret, which reaches only the services naming it.
            "secrets=JWT_SECRET\n")


SCRATCH = "[program:scratch]\ncommand=sleep 600\nstartsecs=0\n\n[health:scratch]\ncritical=false\n"


def _codi2(stopwaitsecs: str, key: str = "stopwaitsecs") -> str:
    """The copy's codi2.conf as tracked, with its stopwaitsecs line rewritten."""
    text = (ROOT / "supervisor" / "conf.d" / "codi2.conf").read_text()
    assert "stopwaitsecs=10\n" in text
    return text.replace("stopwaitsecs=10\n", f"{key}={stopwaitsecs}\n")


def _reloads(demo: Demo) -> int:
    return len(demo.pod.events("reloaded")) + len(demo.pod.events("reload_rejected"))


def _spawns(demo: Demo, name: str) -> int:
    return len(demo.pod.events("spawned", service=name))


def test_reload_against_the_demo_pod(tmp_path: Path) -> None:
    catalogue = tmp_path / "supervisor"
    shutil.copytree(ROOT / "supervisor", catalogue)
    conf = catalogue / "conf.d"
    (conf / "scratch.conf").write_text(SCRATCH)  # there to be removed
    # The stand-ins import a module beside them: no bytecode written into the watched demo/.
    with running_demo("coditect-demo-reload-", catalogue,
                      env={"PYTHONDONTWRITEBYTECODE": "1"}) as demo:
        demo.pod.wait_event("watching_catalogue")
        demo.wait_running(*UNCHANGED, "codi2", "scratch")
        first = {name: demo.pid(name) for name in UNCHANGED}
        scratch, codi2 = demo.pid("scratch"), demo.pid("codi2")
        assert _reloads(demo) == 0

        def unchanged() -> None:
            assert {name: demo.pid(name) for name in UNCHANGED} == first
            assert [_spawns(demo, name) for name in UNCHANGED] == [1, 1, 1]

        # Add one, remove one, change one: one debounced reload applies all three.
        port = free_port()
        (conf / "api-extra.conf").write_text(_extra_api(port))
        (conf / "scratch.conf").unlink()
        (conf / "codi2.conf").write_text(_codi2("3"))
        reloaded = demo.pod.wait_event("reloaded", timeout=10)[0]
        assert (reloaded["added"], reloaded["removed"], reloaded["changed"]) == (
            ["api-extra"], ["scratch"], ["codi2"])
        demo.wait_running("api-extra", "codi2")
        assert "scratch" not in demo.status()
        wait_for(lambda: all_gone({scratch, codi2}), 5, "the removed and the old codi2 gone")
        assert demo.pid("codi2") != codi2
        assert demo.health_get("/readyz")[0] == 200
        unchanged()

        # An invalid edit: rejected, nothing restarted, the errors shown and counted.
        before = {name: demo.pid(name) for name in (*UNCHANGED, "codi2", "api-extra")}
        spawned = len(demo.pod.events("spawned"))
        (conf / "codi2.conf").write_text(_codi2("4", key="stopwaitsecss"))
        rejected = demo.pod.wait_event("reload_rejected", timeout=10)[0]
        typo = [p for p in rejected["problems"] if "stopwaitsecss" in p]
        assert typo and "did you mean 'stopwaitsecs'" in typo[0], rejected["problems"]
        assert str(conf / "codi2.conf") in typo[0] and "[program:codi2]" in typo[0], typo
        status = demo.podctl("status")
        assert status.returncode in (0, 3), status.stdout + status.stderr  # 3: file-monitor down
        assert f"podctl: last reload rejected: {typo[0]}" in status.stderr.splitlines()
        _, metrics = demo.health_get("/metrics")
        assert "coditect_pod_reload_failures_total 1.0" in metrics.splitlines()
        assert {name: demo.pid(name) for name in before} == before
        assert len(demo.pod.events("spawned")) == spawned
        assert demo.health_get("/readyz")[0] == 200

        # An editor's save: a burst of writes to a temp file, then a rename over the original.
        # Exactly one reload (it also clears the rejection), codi2 restarted once.
        count, codi2, codi2_spawns = _reloads(demo), demo.pid("codi2"), _spawns(demo, "codi2")
        temp = conf / ".codi2.conf.swp"
        for attempt in range(5):
            temp.write_text(_codi2(str(5 + attempt)))
            time.sleep(0.05)  # the editor's pace: a burst, not one write
        os.replace(temp, conf / "codi2.conf")
        saved = demo.pod.wait_event("reloaded", count=2, timeout=10)[-1]
        assert (saved["added"], saved["removed"], saved["changed"]) == ([], [], ["codi2"])
        demo.wait_running("codi2")
        holds_for(lambda: _reloads(demo) == count + 1, DEBOUNCE_QUIET, "one reload for the save")
        assert _spawns(demo, "codi2") == codi2_spawns + 1 and demo.pid("codi2") != codi2
        status = demo.podctl("status")
        assert status.returncode in (0, 3) and "last reload rejected" not in status.stderr, (
            status.stdout + status.stderr)
        unchanged()

        # The drain: every child stopped in time, exit 0.
        pids = demo.spawned_pids()
        demo.pod.signal(signal.SIGTERM)
        assert demo.pod.wait(30) == 0, demo.pod.tail(40)
        assert demo.pod.events("exit")[-1]["code"] == 0
        wait_for(lambda: all_gone(pids), 5, "no leftover processes")
