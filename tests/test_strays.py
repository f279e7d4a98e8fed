"""Nothing of a dead run survives it: processes that left their service's process group (a
new session with `setsid`, `nohup … &`, a double-forked daemon) are ended with the run, and
another service's processes are never touched."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from healthz.podctl_client import PodClient
from tests.support import RunningPod, pid_alive, wait_for, write_catalogue

# Each escape a terminal in the IDE makes possible, every pid written where the test reads it
# (the double fork's middle shell exits at once, so its sleep is reparented).
ESCAPES = """\
setsid sleep 4343 & echo $! > "$PIDS/setsid.$$"
nohup sleep 4344 >/dev/null 2>&1 & echo $! > "$PIDS/nohup.$$"
export run=$$; sh -c 'setsid sleep 4345 & echo $! > "$PIDS/daemon.$run"' &
exec sleep 1000
"""


def escaped_pids(directory: Path, run: int) -> dict[str, int]:
    found = {}
    for kind in ("setsid", "nohup", "daemon"):
        path = directory / f"{kind}.{run}"
        if not path.exists() or not path.read_text().strip():
            return {}
        found[kind] = int(path.read_text())
    return found


def test_a_killed_run_takes_its_escaped_descendants_with_it(tmp_path: Path) -> None:
    """kill -9 of a service's main process: its setsid, nohup and double-forked descendants
    are gone soon after and the service is respawned; a neighbour's process lives on. The
    drain then ends the second run's escapees too, with exit 0."""
    pids = tmp_path / "pids"
    pids.mkdir()
    script = tmp_path / "escapes.sh"
    script.write_text(ESCAPES)
    catalogue = write_catalogue(tmp_path / "cat", {
        "dev": {"command": f"sh {script}", "startsecs": "0", "stopwaitsecs": "3"},
        "neighbour": {"command": "sleep 1000", "startsecs": "0"},
    })
    pod = RunningPod(catalogue, tmp_path / "home", env={"PIDS": str(pids)})
    try:
        spawned = {e["service"]: e["pid"] for e in pod.wait_event("spawned", count=2)}
        first = wait_for(lambda: escaped_pids(pids, spawned["dev"]), 10, "the escapes started")
        for kind, pid in first.items():
            assert pid_alive(pid), kind
        assert os.getsid(first["setsid"]) != spawned["dev"]  # really out of its session
        killed_at = time.monotonic()
        os.kill(spawned["dev"], signal.SIGKILL)
        wait_for(lambda: not any(pid_alive(p) for p in first.values()), 10,
                 lambda: f"the first run's escapees gone: {first}")
        print(f"\nescapees gone {time.monotonic() - killed_at:.2f} s after kill -9")
        assert pid_alive(spawned["neighbour"])
        respawned = pod.wait_event("spawned", count=2, service="dev")[-1]["pid"]
        assert respawned != spawned["dev"]
        second = wait_for(lambda: escaped_pids(pids, respawned), 10, "the second run's escapes")
        pod.signal(signal.SIGTERM)
        assert pod.wait() == 0, pod.tail()
        assert not any(pid_alive(p) for p in second.values()), second
        assert not pod.events("killed")  # TERM reached them: nothing waited for SIGKILL
    finally:
        pod.stop()
        for recorded in pids.iterdir():  # a failed run's escapees, by the pids they wrote
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(recorded.read_text()), signal.SIGKILL)


ENDINGS = ("liveness", "stop", "restart", "reload")


@pytest.mark.parametrize("ending", ENDINGS)
def test_every_way_a_run_ends_takes_its_escapees(tmp_path: Path, ending: str) -> None:
    """The run ends by a liveness restart, `stop`, `restart` or a reload that changed the
    service: its setsid, nohup and double-forked descendants are gone with it (the kill -9 and
    drain endings are the test above); the neighbour's process lives on."""
    pids = tmp_path / "pids"
    pids.mkdir()
    script = tmp_path / "escapes.sh"
    script.write_text(ESCAPES)
    hang = tmp_path / "hang"  # liveness fails while this file exists
    catalogue = write_catalogue(
        tmp_path / "cat",
        {"dev": {"command": f"sh {script}", "startsecs": "0", "stopwaitsecs": "3",
                 "environment": 'EDITION="1"'},
         "neighbour": {"command": "sleep 1000", "startsecs": "0"}},
        {"dev": {"live": f"exec:test ! -e {hang}", "interval": "500ms", "failures": "1"}})
    pod = RunningPod(catalogue, tmp_path / "home", env={"PIDS": str(pids)})
    try:
        spawned = {e["service"]: e["pid"] for e in pod.wait_event("spawned", count=2)}
        first = wait_for(lambda: escaped_pids(pids, spawned["dev"]), 10, "the escapes started")
        assert all(pid_alive(p) for p in first.values()), first
        pod.wait_event("health_listening")
        control = PodClient(str(pod.run_dir / "podctl.sock"), 30)
        if ending == "liveness":
            hang.touch()
        elif ending == "reload":
            conf = catalogue / "conf.d" / "dev.conf"
            conf.write_text(conf.read_text().replace('EDITION="1"', 'EDITION="2"'))
            control.call("POST", "/v1/reload")
        else:
            control.call("POST", f"/v1/services/dev/{ending}")
        wait_for(lambda: not any(pid_alive(p) for p in first.values()), 10,
                 lambda: f"the ended run's escapees gone after {ending}: {first}")
        assert pid_alive(spawned["neighbour"])
        hang.unlink(missing_ok=True)
        if ending != "stop":  # a new run, with escapees of its own that the drain ends
            respawned = pod.wait_event("spawned", count=2, service="dev")[-1]["pid"]
            second = wait_for(lambda: escaped_pids(pids, respawned), 10, "the new run's escapes")
            assert all(pid_alive(p) for p in second.values()), second
        pod.signal(signal.SIGTERM)
        assert pod.wait() == 0, pod.tail()
    finally:
        pod.stop()
        for recorded in pids.iterdir():
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(recorded.read_text()), signal.SIGKILL)
