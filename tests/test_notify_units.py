"""The pieces of self-reported readiness and of the termination message, without a pod: the
catalogue's `ready=notify`, `ready=fd:N` and `watchdog=`, an sd_notify datagram's parsing,
the notification fd's placement in a real child, and the choice of the termination message."""

from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from healthz.model import ServiceSnapshot, State
from healthz.probe_spec import parse_probe
from healthz.spec import parse_health_section
from start.catalogue import ServiceSpec
from start.early import first_wave
from start.notify import Told, extension_seconds, one_line, parse
from start.process import needs_notify_socket, spawn
from start.termination import after_drain, cause_at_signal, write
from tests.support import write_catalogue


def test_notify_and_fd_are_readiness_kinds() -> None:
    assert parse_probe("notify").kind == "notify"
    assert parse_probe(" NOTIFY ").text == "notify"
    fd = parse_probe("fd:03")
    assert (fd.kind, fd.fd, fd.text) == ("fd", 3, "fd:3")


@pytest.mark.parametrize("text", ["fd:", "fd:2", "fd:0", "fd:-4", "fd:1024", "fd:x", "fd:٣"])
def test_a_bad_notification_fd_says_what_is_allowed(text: str) -> None:
    with pytest.raises(ValueError, match="from 3 to 1023"):
        parse_probe(text)


def test_notify_cannot_be_a_liveness_probe_and_watchdog_is_its_liveness() -> None:
    spec, problems = parse_health_section({"ready": "notify", "live": "notify",
                                           "watchdog": "10s"})
    assert [(p.key, p.message) for p in problems] == [
        ("live", "'notify' tells readiness only; for a liveness signal from the service use "
                 "watchdog=DURATION")]
    assert (spec.ready.kind, spec.live.kind, spec.watchdog) == ("notify", "none", 10.0)


@pytest.mark.parametrize(("text", "problem"), [
    ("0s", "must be more than 0"), ("soon", ""), ("-1", "")])
def test_watchdog_takes_a_positive_duration(text: str, problem: str) -> None:
    _, problems = parse_health_section({"watchdog": text})
    assert [p.key for p in problems] == ["watchdog"]
    assert problem in problems[0].message


def test_watchdog_spelt_as_systemd_does_is_pointed_at() -> None:
    _, problems = parse_health_section({"WatchdogSec": "10s"})
    assert "did you mean 'watchdog'?" in problems[0].message


def test_a_datagram_is_key_value_lines() -> None:
    assert parse(b"READY=1\nSTATUS=a=b\n\njunk\nSTATUS=last\n\xff=1") == {
        "READY": "1", "STATUS": "last", "\ufffd": "1"}
    assert one_line("  two\nlines\x1b[31m " + "x" * 500) == ("two lines [31m " + "x" * 500)[:200]
    assert extension_seconds("2500000") == 2.5
    assert [extension_seconds(v) for v in ("0", "-1", "1e6", "", "١")] == [None] * 5
    assert Told() == Told("", "")


def spec_of(tmp_path: Path, health: dict[str, str], command: str = "sleep 60") -> ServiceSpec:
    from start.catalogue import load

    catalogue = load(write_catalogue(tmp_path / "cat", {"svc": {"command": command}},
                                     {"svc": health}))
    return catalogue.services[0]


def test_services_that_speak_sd_notify_wait_for_the_engine(tmp_path: Path) -> None:
    """The first wave (spawned before the engine binds the socket) leaves them out."""
    notify = spec_of(tmp_path / "a", {"ready": "notify"})
    watched = spec_of(tmp_path / "b", {"watchdog": "5s"})
    fd = spec_of(tmp_path / "c", {"ready": "fd:3"})
    assert [needs_notify_socket(s) for s in (notify, watched, fd)] == [True, True, False]
    from start.catalogue import Catalogue

    wave = first_wave(Catalogue(services=(notify, replace(watched, name="w"),
                                          replace(fd, name="f")), notes=()))
    assert [s.name for s in wave] == ["f"]


@pytest.mark.parametrize("number", [3, 9])
def test_the_notification_fd_is_fd_n_in_the_child_and_nothing_else_leaks(
        tmp_path: Path, number: int) -> None:
    """The child has the pipe's write end as fd N (whether N is free here or not), and no
    other descriptor beyond its stdio; its newline reaches the read end."""
    # 3..10 busy here, and inheritable: only close_fds keeps them from the child.
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(8)]
    for fd in held:
        os.set_inheritable(fd, True)
    listing = tmp_path / "fds"
    script = (f"import os; fds = os.listdir('/proc/self/fd'); "
              f"open({str(listing)!r}, 'w').write(' '.join(fds)); os.write({number}, b'\\n')")
    spec = spec_of(tmp_path, {"ready": f"fd:{number}"}, f"{sys.executable} -c \"{script}\"")
    try:
        proc = spawn(spec, dict(os.environ))
        try:
            assert proc.ready_fd is not None
            assert proc.popen.wait(30) == 0
            os.set_blocking(proc.ready_fd, True)
            assert os.read(proc.ready_fd, 10) == b"\n"
            fds = sorted(int(fd) for fd in listing.read_text().split())
            # stdin, stdout, stderr, fd N, and the one listdir itself opened
            assert number in fds
            assert len([fd for fd in fds if fd not in (0, 1, 2, number)]) == 1, fds
        finally:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGKILL)
                proc.popen.wait(10)
            os.close(proc.ready_fd or os.open(os.devnull, os.O_RDONLY))
            for stream in (proc.popen.stdout, proc.popen.stderr):
                if stream is not None:
                    stream.close()
    finally:
        for fd in held:
            os.close(fd)


def snapshot(name: str, state: State = State.RUNNING, *, critical: bool = True,
             budget: bool = False) -> ServiceSnapshot:
    return ServiceSnapshot(name=name, state=state, critical=critical, ready=True, live=True,
                           pid=None, started_at=None, restarts=0, budget_exhausted=budget)


def test_the_termination_message_names_the_cause_first() -> None:
    """The budget (what failed /livez) before a fatal service, both before the drain's
    outcome; services that are not critical are no cause."""
    assert cause_at_signal([snapshot("a")]) is None
    assert cause_at_signal([snapshot("a", State.FATAL, critical=False),
                            snapshot("b", budget=True, critical=False)]) is None
    assert cause_at_signal([snapshot("a", State.FATAL), snapshot("b", budget=True)]) == \
        "restart budget of b exhausted"
    assert cause_at_signal([snapshot("a", State.FATAL)]) == "critical service a fatal"
    assert after_drain("critical service a fatal", ["x"]) == "critical service a fatal"
    assert after_drain(None, ["x", "y"]) == "drain deadline hit (x, y)"
    assert after_drain(None, []) == "drained"


def test_the_message_is_one_line_and_a_failure_to_write_is_told(tmp_path: Path) -> None:
    target = tmp_path / "log"
    target.write_text("an older, longer message\n")
    assert write(target, "two\nlines") is None
    assert target.read_text() == "two lines\n"
    assert write(tmp_path / "missing" / "log", "x") == (
        f"{tmp_path / 'missing' / 'log'}: No such file or directory")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert write(link, "x") is not None  # never through a symlink
    assert target.read_text() == "two lines\n"


def test_a_datagram_socket_of_the_kind_children_use() -> None:
    """The kernel passes credentials on an AF_UNIX datagram socket with SO_PASSCRED (what
    start.notify relies on), here with a socketpair."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with left, right:
        right.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        left.send(b"READY=1")
        _, ancillary, _, _ = right.recvmsg(64, socket.CMSG_SPACE(12))
        from start.notify import _sender

        assert _sender(ancillary) == (os.getpid(), [])
