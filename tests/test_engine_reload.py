"""Hot reload of the real engine: a change on disk, SIGHUP and the control socket's reload
apply only the difference; an invalid edit leaves the running pod untouched."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

from healthz.podctl_client import PodClient
from start.watch import DEBOUNCE
from tests.support import RunningPod, wait_for, write_catalogue

SLEEPER = "sh -c 'trap \"exit 0\" TERM; while :; do sleep 0.05; done'"


def _program(name: str, command: str = SLEEPER) -> str:
    return f"[program:{name}]\ncommand={command}\nstartsecs=0\n"


def _pids(pod: RunningPod) -> dict[str, int]:
    """The current pid of each service, from the spawned/exited event stream."""
    alive: dict[str, int] = {}
    for event in pod.events():
        if event.get("event") == "spawned":
            alive[event["service"]] = event["pid"]
        elif event.get("event") == "exited" and alive.get(event["service"]) == event["pid"]:
            del alive[event["service"]]
    return alive


def test_reload_applies_only_the_difference(tmp_path: Path) -> None:
    """Add, remove, change on disk; unchanged services keep their pid; invalid edits are
    rejected, shown and counted; an editor's save burst is one reload."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "keep": {"command": SLEEPER, "startsecs": "0"},
        "drop": {"command": SLEEPER, "startsecs": "0"},
        "edit": {"command": SLEEPER, "startsecs": "0"}})
    conf = catalogue / "conf.d"
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("spawned", count=3)
        pod.wait_event("watching_catalogue")
        keep = _pids(pod)["keep"]

        # Add one, remove one, change one: one debounced reload.
        (conf / "fresh.conf").write_text(_program("fresh"))
        (conf / "drop.conf").unlink()
        (conf / "edit.conf").write_text(_program("edit", SLEEPER + " ") + "stopwaitsecs=3\n")
        reloaded = pod.wait_event("reloaded", timeout=10)[0]
        assert reloaded["added"] == ["fresh"]
        assert reloaded["removed"] == ["drop"]
        assert reloaded["changed"] == ["edit"]
        wait_for(lambda: set(_pids(pod)) == {"keep", "edit", "fresh"}, 10, "the new set")
        assert _pids(pod)["keep"] == keep

        # An invalid edit: rejected, the pod untouched, the errors visible and counted.
        before = _pids(pod)
        (conf / "edit.conf").write_text(_program("edit") + "startsecss=5\n")
        rejected = pod.wait_event("reload_rejected", timeout=10)[0]
        assert any("startsecss" in p and "did you mean 'startsecs'" in p
                   for p in rejected["problems"])
        assert _pids(pod) == before
        status = PodClient(str(pod.run_dir / "podctl.sock"), 10).call("GET", "/v1/status")
        assert any("startsecss" in line for line in status["reload_errors"])
        with urllib.request.urlopen(f"http://127.0.0.1:{pod.health_port}/metrics",
                                    timeout=5) as answer:
            assert "coditect_pod_reload_failures_total 1.0" in answer.read().decode()

        # An editor's save: several writes to a temp file, then a rename over the original.
        count = len(pod.events("reloaded"))
        temp = conf / ".edit.conf.swp"
        for attempt in range(5):
            temp.write_text(_program("edit") + f"stopwaitsecs={attempt + 1}\n")
        os.replace(temp, conf / "edit.conf")
        pod.wait_event("reloaded", count=count + 1, timeout=10)
        wait_for(lambda: "edit" in _pids(pod), 10, "edit running again")
        assert _pids(pod)["keep"] == keep

        # SIGHUP and the socket's reload re-read an unchanged catalogue: nothing restarts.
        # The SIGHUP's reload is the next one: the burst above made exactly one.
        pod.signal(signal.SIGHUP)
        pod.wait_event("reloaded", count=count + 2, timeout=10)
        assert pod.events("reloaded")[count + 1]["changed"] == []
        answer = PodClient(str(pod.run_dir / "podctl.sock"), 10).call("POST", "/v1/reload")
        assert answer["ok"] is True
        assert _pids(pod)["keep"] == keep
    finally:
        pod.stop()


def test_edit_during_boot_is_applied(tmp_path: Path) -> None:
    """The watcher starts once the boot is over; an edit made between the parse and then
    (here while a critical service is not yet ready) is found by comparing the files with
    what the parse read, and reloaded."""
    catalogue = write_catalogue(
        tmp_path / "cat",
        {"slow": {"command": SLEEPER, "startsecs": "0"}},
        health={"slow": {"ready": "exec:false", "interval": "1s", "start_timeout": "60s"}})
    conf = catalogue / "conf.d"
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("spawned")
        assert not pod.events("watching_catalogue")
        (conf / "fresh.conf").write_text(_program("fresh"))
        pod.wait_event("watching_catalogue")
        pod.wait_event("catalogue_changed_during_boot")
        reloaded = pod.wait_event("reloaded", timeout=10)[0]
        assert reloaded["added"] == ["fresh"]
        wait_for(lambda: "fresh" in _pids(pod), 10, "fresh running")
    finally:
        pod.stop()


def test_only_the_catalogues_own_files_reload(tmp_path: Path) -> None:
    """Writes beside the catalogue (a busy neighbour directory, the home and run directories
    next to the overlay, a non-matching file in conf.d) cause 0 reloads; the overlay, a file
    its include pattern matches and a ConfigMap-style symlink swap each cause one."""
    catalogue = write_catalogue(tmp_path / "cat", {"keep": {"command": SLEEPER,
                                                            "startsecs": "0"}})
    conf = catalogue / "conf.d"
    overlay = tmp_path / "overlay.conf"
    overlay.write_text("[program:keep]\nstopwaitsecs=4\n")
    busy = tmp_path / "busy"
    busy.mkdir()
    pod = RunningPod(catalogue, tmp_path / "home", extra_args=["--overlay", str(overlay)])
    try:
        pod.wait_event("watching_catalogue")
        deadline = time.monotonic() + 3.0
        written = 0
        while time.monotonic() < deadline:  # ~3 s of a busy neighbourhood
            (busy / f"f{written % 50}.log").write_text(str(written))
            (tmp_path / "neighbour.txt").write_text(str(written))
            (tmp_path / "home" / "scratch.txt").write_text(str(written))
            (conf / "notes.txt").write_text(str(written))
            written += 1
            time.sleep(0.005)
        time.sleep(DEBOUNCE + 0.5)  # any reload those caused would have begun by now
        assert written > 100
        assert pod.events("reloaded") == []

        overlay.write_text("[program:keep]\nstopwaitsecs=5\n")
        pod.wait_event("reloaded", timeout=10)
        (conf / "fresh.conf").write_text(_program("fresh"))
        assert pod.wait_event("reloaded", count=2, timeout=10)[1]["added"] == ["fresh"]

        # A ConfigMap volume: conf.d/x.conf -> ..data/x.conf, ..data -> a dated directory,
        # updated by renaming a new ..data link over the old one.
        for name, text in (("..2026_01", _program("linked")), ("..2026_02",
                                                               _program("linked", "sleep 30"))):
            (conf / name).mkdir()
            (conf / name / "linked.conf").write_text(text)
        (conf / "..data").symlink_to("..2026_01")
        (conf / "linked.conf").symlink_to("..data/linked.conf")
        assert pod.wait_event("reloaded", count=3, timeout=10)[2]["added"] == ["linked"]
        (conf / "..data_tmp").symlink_to("..2026_02")
        os.replace(conf / "..data_tmp", conf / "..data")
        assert pod.wait_event("reloaded", count=4, timeout=10)[3]["changed"] == ["linked"]
    finally:
        pod.stop()
