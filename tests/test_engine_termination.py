"""The termination message, with the real engine: the one line it leaves in the file Kubernetes
reads (`terminationMessagePath`) for each way a pod ends."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from start.cli import parse_args
from start.termination import choose
from tests.support import RunningPod, get, wait_for, write_catalogue

IGNORE_TERM = "sh -c 'trap \"\" TERM; while :; do sleep 0.05; done'"


def stopped(pod: RunningPod) -> int:
    pod.signal(signal.SIGTERM)
    return pod.wait()


def test_a_clean_drain_says_drained(tmp_path: Path) -> None:
    message = tmp_path / "termination-log"
    catalogue = write_catalogue(tmp_path / "cat", {"idle": {"command": "sleep 120"}})
    pod = RunningPod(catalogue, tmp_path / "home",
                     extra_args=["--termination-log", str(message)])
    try:
        pod.wait_event("spawned", service="idle")
        assert stopped(pod) == 0, pod.tail()
        assert message.read_text() == "drained\n"
        assert pod.events("exit")[0]["reason"] == "drained"
    finally:
        pod.stop()


def test_a_drain_that_needed_sigkill_names_the_service(tmp_path: Path) -> None:
    """Set through the environment this time."""
    message = tmp_path / "termination-log"
    catalogue = write_catalogue(tmp_path / "cat", {
        "stubborn": {"command": IGNORE_TERM, "stopwaitsecs": "60", "startsecs": "0"},
        "idle": {"command": "sleep 120"}})
    pod = RunningPod(catalogue, tmp_path / "home", extra_args=["--drain-timeout", "1"],
                     env={"CODITECT_TERMINATION_LOG": str(message)})
    try:
        pod.wait_event("spawned", service="stubborn")
        assert stopped(pod) == 1, pod.tail()
        assert message.read_text() == "drain deadline hit (stubborn)\n"
    finally:
        pod.stop()


def test_after_a_failing_livez_the_message_names_the_budget_not_the_drain(
        tmp_path: Path) -> None:
    """A critical service crash-loops past restart_budget, /livez fails, the kubelet sends
    SIGTERM: the message is the budget, though the drain itself went well."""
    message = tmp_path / "termination-log"
    catalogue = write_catalogue(tmp_path / "cat", {
        "crashy": {"command": "sh -c 'sleep 0.1; exit 3'", "startsecs": "0",
                   "autorestart": "true"}}, {"crashy": {"restart_budget": "2/10m"}})
    pod = RunningPod(catalogue, tmp_path / "home",
                     extra_args=["--termination-log", str(message)])
    try:
        pod.wait_event("health_listening")
        wait_for(lambda: get(pod.health_port, "/livez")[0] == 503, 30, "/livez to fail")
        # /health says so too, whether or not crashy happens to be up at this moment.
        status, body = get(pod.health_port, "/health")
        live = json.loads(body)["checks"]["crashy:live"][0]
        assert (status, live["status"]) == (503, "fail")
        assert live["observedValue"] >= 3 and live["observedUnit"] == "restarts in 600s"
        assert stopped(pod) == 0, pod.tail()
        assert message.read_text() == "restart budget of crashy exhausted\n"
        assert not pod.events("giving_up")  # on_fatal=keep: it was the kubelet's SIGTERM
    finally:
        pod.stop()


def test_a_fatal_critical_service_is_the_message(tmp_path: Path) -> None:
    message = tmp_path / "termination-log"
    catalogue = write_catalogue(tmp_path / "cat", {
        "broken": {"command": "sh -c 'exit 1'", "startsecs": "1", "startretries": "0"},
        "extra": {"command": "sleep 120"}}, {"extra": {"critical": "false"}})
    pod = RunningPod(catalogue, tmp_path / "home",
                     extra_args=["--termination-log", str(message)])
    try:
        pod.wait_event("backoff", service="broken", level="error")  # fatal
        assert stopped(pod) == 0, pod.tail()
        assert message.read_text() == "critical service broken fatal\n"
    finally:
        pod.stop()


def test_on_fatal_exit_past_the_budget_drains_and_exits_with_its_code(tmp_path: Path) -> None:
    """No kubelet to read /livez (a plain `docker run`): past its budget, the service ends the
    pod with its exit_code, and the message names the budget, though the drain went well."""
    message = tmp_path / "termination-log"
    catalogue = write_catalogue(tmp_path / "cat", {
        "crashy": {"command": "sh -c 'sleep 0.1; exit 3'", "startsecs": "0",
                   "autorestart": "true"},
        "idle": {"command": "sleep 120"}},
        {"crashy": {"restart_budget": "2/10m", "on_fatal": "exit", "exit_code": "42"}})
    pod = RunningPod(catalogue, tmp_path / "home",
                     extra_args=["--termination-log", str(message)])
    try:
        assert pod.wait(60) == 42, pod.tail()
        assert message.read_text() == "restart budget of crashy exhausted (on_fatal=exit)\n"
        [given_up] = pod.events("giving_up")
        assert (given_up["service"], given_up["exit_code"]) == ("crashy", 42)
        assert pod.events("exited", service="idle")  # drained, not abandoned
        assert pod.events("exit")[0]["code"] == 42
    finally:
        pod.stop()


def test_on_fatal_exit_of_a_fatal_service_exits_75(tmp_path: Path) -> None:
    """A non-critical service past startretries, with on_fatal=exit and no exit_code: 75."""
    message = tmp_path / "termination-log"
    catalogue = write_catalogue(tmp_path / "cat", {
        "broken": {"command": "sh -c 'exit 1'", "startsecs": "1", "startretries": "0"},
        "idle": {"command": "sleep 120"}},
        {"broken": {"critical": "false", "on_fatal": "exit"}})
    pod = RunningPod(catalogue, tmp_path / "home",
                     extra_args=["--termination-log", str(message)])
    try:
        assert pod.wait(60) == 75, pod.tail()
        assert message.read_text() == "service broken fatal (on_fatal=exit)\n"
    finally:
        pod.stop()


def test_an_invalid_catalogue_is_the_message(tmp_path: Path) -> None:
    message = tmp_path / "termination-log"
    catalogue = write_catalogue(tmp_path / "cat", {"idle": {"command": "sleep 120"}},
                                {"idle": {"ready": "fd:1"}})
    pod = RunningPod(catalogue, tmp_path / "home",
                     extra_args=["--termination-log", str(message)])
    try:
        assert pod.wait() == 78
        text = message.read_text()
        assert text.startswith("catalogue invalid: ") and text.count("\n") == 1
        assert "fd:N needs a descriptor number from 3" in text
    finally:
        pod.stop()


def test_where_the_message_goes() -> None:
    """The flag wins over the variable; an empty value turns it off; without either, the
    kubelet's file only when it is there to write."""
    assert parse_args(["--termination-log", "/x"], {"CODITECT_TERMINATION_LOG": "/y"}
                      ).termination_log == Path("/x")
    assert parse_args([], {"CODITECT_TERMINATION_LOG": "/y"}).termination_log == Path("/y")
    assert parse_args([], {"CODITECT_TERMINATION_LOG": ""}).termination_log is None
    kubelet = Path("/dev/termination-log")
    expected = kubelet if kubelet.exists() else None
    assert choose(None) == expected
