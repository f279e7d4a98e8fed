"""The boot's first moments (start/early.py): services spawned before the engine is imported
are adopted by it, and a stop signal that comes before the engine's handlers is kept.

The window between the first spawns and the engine's handlers is ~30 ms; to land in it every
time, a `sitecustomize` (failure injection, nothing else) holds it open: it marks its start and
waits for the test to say "go" (a file) once it has acted inside it. The engine, its children
and the signals are real."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, RunningPod, pid_alive, wait_for, write_catalogue

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="a new PID namespace needs root and unshare")

WIDENED = """\
import os, pathlib, time
import start.early as early

_spawn_first_wave = early.spawn_first_wave


def _slowly(*args, **kwargs):
    spawned = _spawn_first_wave(*args, **kwargs)
    pathlib.Path(os.environ["EARLY_WINDOW_MARK"]).write_text(
        " ".join(str(p.pid) for p in spawned.values()))
    go = pathlib.Path(os.environ["EARLY_WINDOW_GO"])
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)  # the engine is imported and its handlers installed after this
    return spawned


early.spawn_first_wave = _slowly
"""


@pytest.fixture
def widened(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Environment that holds the window open, and the file that appears when it opens; the
    window closes when the test writes the file's sibling `go` (wait_open does both)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(WIDENED)
    mark = tmp_path / "window-open"
    return {"PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "EARLY_WINDOW_MARK": str(mark),
            "EARLY_WINDOW_GO": str(tmp_path / "go")}, mark


def wait_open(mark: Path) -> list[int]:
    """Wait until the window is open: the pids of the first wave."""
    text = wait_for(lambda: mark.exists() and mark.read_text(), 15, "the first wave spawned")
    return [int(p) for p in text.split()]


def close_window(mark: Path) -> None:
    """Let the engine go on past the window."""
    (mark.parent / "go").touch()


@needs_root
def test_a_sigterm_before_the_engines_handlers_is_kept_and_drains(
        tmp_path: Path, widened: tuple[dict[str, str], Path]) -> None:
    """PID 1 without a handler never sees a SIGTERM (the kernel drops it): the one that comes
    while the first services are already running must still drain the pod."""
    env, mark = widened
    catalogue = write_catalogue(tmp_path / "cat", {
        "sleeper": {"command": "sleep 1000", "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home", pid1=True, env=env)
    try:
        wait_open(mark)
        pod.signal(signal.SIGTERM)  # inside the window: before the engine's handlers
        close_window(mark)
        assert pod.wait(20) == 0, pod.tail()
        assert pod.events("signal")[0]["signal"] == "SIGTERM"
        assert pod.events("exited", service="sleeper"), pod.tail()
    finally:
        pod.stop()


def test_a_service_spawned_early_is_adopted_not_spawned_twice(
        tmp_path: Path, widened: tuple[dict[str, str], Path]) -> None:
    """The first wave's child is the service's process: one spawn, the same pid."""
    env, mark = widened
    catalogue = write_catalogue(tmp_path / "cat", {
        "sleeper": {"command": "sleep 1000", "startsecs": "0"},
        "later": {"command": "sleep 1000", "startsecs": "0"}},
        health={"later": {"after": "sleeper"}})
    pod = RunningPod(catalogue, tmp_path / "home", env=env)
    try:
        early_pids = wait_open(mark)
        close_window(mark)
        assert len(early_pids) == 1  # `later` waits for `sleeper`: not in the first wave
        spawned = pod.wait_event("spawned", 15, service="sleeper")
        assert spawned[0]["pid"] == early_pids[0]
        pod.wait_event("spawned", 15, service="later")
        assert len(pod.events("spawned", service="sleeper")) == 1
        assert pid_alive(early_pids[0])
    finally:
        pod.stop()
    assert not pid_alive(early_pids[0])


def test_an_early_child_that_exits_before_the_reaper_exists_is_its_services_exit(
        tmp_path: Path, widened: tuple[dict[str, str], Path]) -> None:
    """Reaped for its service (an exit, a restart), not counted as an adopted orphan."""
    env, mark = widened
    catalogue = write_catalogue(tmp_path / "cat", {
        "brief": {"command": "sh -c 'exit 3'", "startsecs": "0", "autorestart": "false"}})
    pod = RunningPod(catalogue, tmp_path / "home", env=env)
    try:
        brief = wait_open(mark)[0]
        wait_for(lambda: not pid_alive(brief), 10, "brief to exit inside the window")
        close_window(mark)
        exited = pod.wait_event("exited", 15, service="brief")
        assert exited[0]["status"] == "exit 3"
        pod.signal(signal.SIGTERM)
        assert pod.wait(20) == 0
        assert pod.events("exit")[-1]["orphans_reaped"] == 0
    finally:
        pod.stop()


def test_first_wave_is_what_the_boot_spawns_at_once() -> None:
    from start.catalogue import load as load_catalogue
    from start.early import first_wave

    catalogue = load_catalogue(ROOT / "supervisor" / "supervisord.conf",
                               overlay=ROOT / "demo" / "overlay.conf",
                               environ={**os.environ, "CODITECT_HOME": "/tmp/h",
                                        "CODITECT_RUN": "/tmp/r", "CODITECT_WORKSPACE": "/tmp",
                                        "JWT_SECRET": "x", "FDB_CLUSTER_FILE": "/dev/null",
                                        "PATH": f"{Path(sys.executable).parent}:"
                                                f"{os.environ.get('PATH', '')}"})
    names = [spec.name for spec in first_wave(catalogue)]
    assert "nginx" not in names  # after= theia, coditect-v5-api, codi2
    assert {"theia", "coditect-v5-api", "codi2", "file-monitor"} <= set(names)


def test_the_health_libraries_come_after_the_services_start(tmp_path: Path) -> None:
    """aiohttp and the health server are imported once the services have left the CPU (or at
    the deadline), and the health port answers from then on."""
    from tests.support import http_get

    catalogue = write_catalogue(tmp_path / "cat", {
        "sleeper": {"command": "sleep 1000", "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        imported = pod.wait_event("health_libraries_imported", 15)[0]
        assert imported["cause"] in ("quiet", "deadline")
        assert 0 <= imported["waited_ms"] <= 600  # IMPORT_AT_LATEST (0.5 s) and a loop turn
        listening = pod.wait_event("health_listening", 15)
        assert pod.events().index(listening[0]) > pod.events().index(imported)
        url = f"http://127.0.0.1:{pod.health_port}/livez"
        assert http_get(url)[0] == 200
    finally:
        pod.stop()
