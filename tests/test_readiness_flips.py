"""A running service's readiness probe changing its verdict is an event (`readiness`), so a
follower of the event stream sees probe flips without polling."""

from __future__ import annotations

from pathlib import Path

from tests.support import RunningPod, write_catalogue


def test_a_readiness_flip_is_one_event_each_way(tmp_path: Path) -> None:
    """Ready (the lifecycle's `ready`, no `readiness` beside it), then unready when the probe
    fails, then ready again: one `readiness` event per change, none while nothing changes."""
    flag = tmp_path / "serving"
    flag.touch()
    catalogue = write_catalogue(
        tmp_path / "cat", {"web": {"command": "sleep 1000", "startsecs": "0"}},
        {"web": {"ready": f"exec:test -e {flag}", "interval": "200ms", "failures": "1"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("ready", service="web")
        assert not pod.events("readiness")
        flag.unlink()
        lost = pod.wait_event("readiness", service="web")[0]
        assert lost["ready"] is False
        flag.touch()
        flips = pod.wait_event("readiness", service="web", count=2)
        assert flips[1]["ready"] is True
        assert len(pod.events("ready", service="web")) == 1  # the same run: no second `ready`
    finally:
        pod.stop()
    assert len(pod.events("readiness")) == 2, pod.events("readiness")
