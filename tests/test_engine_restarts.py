"""Restart policy, backoff and stop signals of the real engine, in-process, real children."""

from __future__ import annotations

from pathlib import Path

from healthz.model import State
from start.lifecycle import backoff_delay
from tests.engine_harness import running_pod, until
from tests.support import write_catalogue

TRAPPING = "sh -c 'trap \"exit 0\" TERM; while :; do sleep 0.05; done'"


def test_backoff_delay_grows_and_is_capped() -> None:
    """The first restart is immediate, then the delay doubles up to the cap."""
    delays = [backoff_delay(n, 0.5, 30) for n in range(1, 12)]
    assert delays[:6] == [0, 0.5, 1, 2, 4, 8]
    assert max(delays) == 30 and delays[-1] == 30
    assert backoff_delay(10_000, 0.5, 30) == 30  # no overflow on a very long crash loop


async def test_stop_right_after_start_never_waits_for_sigkill(tmp_path: Path) -> None:
    """100 stops sent right after a spawn: every one is honoured, none needs SIGKILL."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "quick": {"command": TRAPPING, "startsecs": "0", "stopwaitsecs": "5",
                  "autostart": "false"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, events):
        service = pod.services["quick"]
        for _ in range(100):
            service.request_start([])
            assert service.proc is not None
            await service.stop()
        assert events.named("killed") == []  # each ended by its TERM, none at stopwaitsecs
        assert len(events.named("spawned")) == 100
        assert service.state is State.STOPPED


async def test_crash_loop_backs_off_caps_and_resets_after_a_stable_run(tmp_path: Path) -> None:
    """Five quick crashes back off 0, b, 2b, cap, cap; a stable run resets to immediate."""
    counter = tmp_path / "runs"
    script = (f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
              "if [ $n -eq 6 ]; then sleep 0.8; fi; exit 1")
    catalogue = write_catalogue(tmp_path / "cat", {
        "crasher": {"command": f"sh -c '{script}'", "startsecs": "0", "autorestart": "true"}})
    async with running_pod(catalogue, tmp_path / "logs", backoff_base=0.1, backoff_cap=0.4,
                           stable_run=0.5) as (pod, events):
        await until(lambda: len(events.named("backoff")) >= 7, 15, "seven restarts")
        delays = [e["delay_seconds"] for e in events.named("backoff")][:7]
        assert delays == [0.0, 0.1, 0.2, 0.4, 0.4, 0.0, 0.1]
        # The waits really happened: spawn gaps follow the delays (never full speed).
        spawns = events.times("spawned")
        assert spawns[3] - spawns[2] >= 0.2
        assert pod.services["crasher"].restarts >= 7


async def test_failed_starts_turn_fatal_but_keep_retrying(tmp_path: Path) -> None:
    """Exits before startsecs count as failed starts; past startretries it is FATAL, with a
    reason, and still retried at the cap instead of given up on."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "broken": {"command": "sh -c 'exit 2'", "startsecs": "5", "startretries": "2"}})
    async with running_pod(catalogue, tmp_path / "logs", backoff_base=0.05,
                           backoff_cap=0.3) as (pod, events):
        service = pod.services["broken"]
        await until(lambda: service.state is State.FATAL, 10, "FATAL")
        assert "failed to start 3 times" in service.reason
        spawned = len(events.named("spawned"))
        await until(lambda: len(events.named("spawned")) > spawned, 5, "a retry while FATAL")
        assert service.snapshot().last_exit == "exit 2"


async def test_expected_exit_is_not_restarted_under_autorestart_unexpected(
        tmp_path: Path) -> None:
    """autorestart=unexpected with exitcodes=0,3: exit 3 leaves it EXITED, as supervisord."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "oneshot": {"command": "sh -c 'sleep 0.2; exit 3'", "startsecs": "0",
                    "exitcodes": "0,3"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, events):
        service = pod.services["oneshot"]
        await until(lambda: service.state is State.EXITED, 5, "EXITED")
        assert len(events.named("spawned")) == 1
        assert service.last_exit_code == 3


async def test_restart_verb_counts_reason_and_replaces_pid(tmp_path: Path) -> None:
    """A manual restart stops the group and spawns again, counted under 'manual'."""
    catalogue = write_catalogue(tmp_path / "cat", {
        "svc": {"command": TRAPPING, "startsecs": "0"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, _events):
        first = pod.services["svc"].proc
        assert first is not None
        message = await pod.restart_service("svc")
        second = pod.services["svc"].proc
        assert second is not None and second.pid != first.pid
        assert "running" in message
        assert pod.snapshot().service("svc").restarts_by_reason == {"manual": 1}  # type: ignore[union-attr]
