"""What stands under $CODITECT_HOME cannot hang, crash or redirect PID 1: FIFOs, devices,
directories and symlinks where the pod's files belong are set aside, never opened through."""

from __future__ import annotations

import os
import shutil
import signal
import stat
from pathlib import Path

import pytest

from coditect_init import homefs, prepare
from start.logs import ServiceLog
from tests.support import RunningPod, get, wait_for, write_catalogue

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="a new PID namespace needs root and unshare")

TALKER = {"command": "sh -c 'echo hello; exec sleep 100'", "startsecs": "0"}


def _asides(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"{name}.invalid-*"))


def _livez(port: int) -> int:
    """/livez's status, 0 while nothing answers yet."""
    try:
        return get(port, "/livez")[0]
    except OSError:
        return 0


def _regular_with(path: Path, data: bytes) -> bool:
    """Whether `path` is a regular file (looked at first: reading a FIFO would block) that
    holds `data`."""
    try:
        return stat.S_ISREG(path.lstat().st_mode) and data in path.read_bytes()
    except FileNotFoundError:
        return False


@needs_root
def test_a_fifo_at_a_service_log_and_at_events_log_boots_serves_and_drains(
        tmp_path: Path) -> None:
    """FIFOs at logs/talker.log and logs/events.log: PID 1 boots, answers /livez, writes the
    child's line to a fresh regular log, reports the FIFO once and drains on SIGTERM."""
    catalogue = write_catalogue(tmp_path / "cat", {"talker": TALKER})
    logs = tmp_path / "home" / "logs"
    logs.mkdir(parents=True)
    os.mkfifo(logs / "talker.log")
    os.mkfifo(logs / "events.log")
    pod = RunningPod(catalogue, tmp_path / "home", pid1=True)
    try:
        wait_for(lambda: _livez(pod.health_port) == 200, 15, "/livez")
        wait_for(lambda: _regular_with(logs / "talker.log", b"hello"), 10, "the line")
        [aside] = _asides(logs, "talker.log")
        assert stat.S_ISFIFO(aside.lstat().st_mode)
        reports = pod.events("log_file_failed", service="talker")
        assert len(reports) == 1 and "FIFO" in reports[0]["error"]
        [events_aside] = _asides(logs, "events.log")
        assert stat.S_ISFIFO(events_aside.lstat().st_mode)
        assert stat.S_ISREG((logs / "events.log").lstat().st_mode)
        pod.signal(signal.SIGTERM)
        assert pod.wait(30) == 0
        assert "Traceback" not in "".join(pod.stderr)
    finally:
        pod.stop()


def test_a_symlink_at_a_service_log_never_leads_the_output_outside(tmp_path: Path) -> None:
    """logs/talker.log -> a file outside the home: the link is set aside, the outside file
    keeps its bytes, and the child's output goes to a new regular log in the home."""
    catalogue = write_catalogue(tmp_path / "cat", {"talker": TALKER})
    logs = tmp_path / "home" / "logs"
    logs.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious\n")
    (logs / "talker.log").symlink_to(outside)
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        wait_for(lambda: _regular_with(logs / "talker.log", b"hello"), 10, "the line")
        [aside] = _asides(logs, "talker.log")
        assert aside.is_symlink()
        pod.signal(signal.SIGTERM)
        assert pod.wait(30) == 0
    finally:
        pod.stop()
    assert outside.read_bytes() == b"precious\n"


@pytest.mark.parametrize("what", ["fifo", "directory", "symlink"])
def test_service_log_sets_aside_what_is_not_a_regular_file(tmp_path: Path, what: str) -> None:
    """A FIFO, a directory or a symlink at the log's name: renamed aside, reported once, and a
    regular 0640 file takes its place."""
    logs = tmp_path / "home" / "logs"
    logs.mkdir(parents=True)
    path = logs / "svc.log"
    if what == "fifo":
        os.mkfifo(path)
    elif what == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    reports: list[str] = []
    log = ServiceLog(path, 0, 3, on_error=reports.append)
    log.write(b"line\n")
    log.close()
    assert path.read_bytes() == b"line\n" and not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert len(_asides(logs, "svc.log")) == 1
    assert len(reports) == 1 and "svc.log" in reports[0]


def test_a_symlink_swapped_in_during_rotation_is_not_written_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rotation reopens relative to the directory without following: a symlink planted at
    the log's name just after it was renamed away is set aside, its target untouched."""
    logs = tmp_path / "home" / "logs"
    logs.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious\n")
    reports: list[str] = []
    log = ServiceLog(logs / "svc.log", 10, 2, on_error=reports.append)
    renamed = log._rename

    def rename_then_plant(old: str, new: str) -> None:  # failure injection: the race, forced
        renamed(old, new)
        if old == "svc.log":
            (logs / "svc.log").symlink_to(outside)

    monkeypatch.setattr(log, "_rename", rename_then_plant)
    log.write(b"first line past ten bytes\nsecond\n")
    log.close()
    assert outside.read_bytes() == b"precious\n"
    assert (logs / "svc.log.1").read_bytes() == b"first line past ten bytes\n"
    assert (logs / "svc.log").read_bytes() == b"second\n"
    assert [p.is_symlink() for p in _asides(logs, "svc.log")] == [True]


def test_a_logs_directory_leading_outside_the_home_is_refused(tmp_path: Path) -> None:
    """logs -> a directory outside the home: nothing is created there; the failure is one
    message and every write after it only counts."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "logs").symlink_to(outside)
    reports: list[str] = []
    log = ServiceLog(tmp_path / "home" / "logs" / "svc.log", 0, 3, on_error=reports.append)
    log.write(b"line\n")
    log.close()
    assert list(outside.iterdir()) == []
    assert len(reports) == 1 and "outside" in reports[0]
    assert log.failures == 2


@pytest.mark.parametrize("name", ["settings.json", "logs/events.log", "agents/a.md"])
def test_coditect_init_sets_aside_a_fifo_where_a_file_belongs(tmp_path: Path, name: str) -> None:
    """A FIFO where the template has a file is renamed aside (never opened: that would
    block) and the template's file seeded in its place, with a warning."""
    template = tmp_path / "tpl"
    (template / "agents").mkdir(parents=True)
    (template / "agents" / "a.md").write_text("agent\n")
    (template / "settings.json").write_text('{"k": 1}\n')
    home = tmp_path / "home"
    prepare(home, template)
    (home / name).unlink()
    os.mkfifo(home / name)
    report = prepare(home, template)
    directory, _, base = (home / name).parent, None, (home / name).name
    assert stat.S_ISREG((home / name).lstat().st_mode)
    [aside] = _asides(directory, base)
    assert stat.S_ISFIFO(aside.lstat().st_mode)
    assert any("FIFO" in warning for warning in report.warnings)


def test_open_regular_refuses_a_device_without_opening_it(tmp_path: Path) -> None:
    """A character device at a name is reported as such; nothing is opened."""
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    os.mknod(tmp_path / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(homefs.NotRegular, match="character device"):
            homefs.open_regular(fd, "dev", homefs.READ)
    finally:
        os.close(fd)


def test_logs_are_private(tmp_path: Path) -> None:
    """A boot makes logs/ 0750 and every log file 0640, also a home left 0755/0644 by an
    older version; other users read nothing."""
    catalogue = write_catalogue(tmp_path / "cat", {"talker": TALKER})
    home = tmp_path / "home"
    logs = home / "logs"
    logs.mkdir(parents=True, mode=0o755)
    logs.chmod(0o755)
    (logs / "talker.log").write_bytes(b"from an older boot\n")
    (logs / "talker.log").chmod(0o644)
    pod = RunningPod(catalogue, home)
    try:
        wait_for(lambda: _regular_with(logs / "talker.log", b"hello"), 10, "the line")
        pod.signal(signal.SIGTERM)
        assert pod.wait(30) == 0
    finally:
        pod.stop()
    assert stat.S_IMODE(logs.stat().st_mode) == 0o750
    assert stat.S_IMODE((logs / "talker.log").stat().st_mode) == 0o640
    assert stat.S_IMODE((logs / "events.log").stat().st_mode) == 0o640


def test_a_fresh_home_has_private_logs(tmp_path: Path) -> None:
    """coditect_init creates logs/ 0750 and logs/events.log 0640, whatever the umask."""
    old = os.umask(0)
    try:
        prepare(tmp_path / "home", None)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "home" / "logs").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "home" / "logs" / "events.log").stat().st_mode) == 0o640


def test_rotated_copies_stay_private(tmp_path: Path) -> None:
    """Every file a rotation leaves is 0640, whatever the umask."""
    logs = tmp_path / "home" / "logs"
    logs.mkdir(parents=True)
    old = os.umask(0)
    try:
        log = ServiceLog(logs / "svc.log", 100, 3, on_error=pytest.fail)
        log.write(b"x" * 99 + b"\n" + b"y" * 99 + b"\n" + b"z\n")
        log.close()
    finally:
        os.umask(old)
    files = sorted(logs.iterdir())
    assert [p.name for p in files] == ["svc.log", "svc.log.1", "svc.log.2"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o640}


@pytest.mark.parametrize("what", ["fifo", "symlink"])
def test_the_file_monitor_events_log_sets_aside_a_fifo_or_symlink(tmp_path: Path,
                                                                   what: str) -> None:
    """The file monitor's events.log: a FIFO is set aside (no blocked open), a symlink too
    (its target keeps its bytes); events then go to a fresh regular 0640 file."""
    from coditect_file_monitor.sink import RotatingFileSink

    path = tmp_path / "events.log"
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious\n")
    if what == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(outside)
    sink = RotatingFileSink(str(path), max_bytes=0, backups=1)
    sink.write('{"event": 1}')
    sink.close()
    assert _regular_with(path, b'{"event": 1}\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert len(_asides(tmp_path, "events.log")) == 1
    assert outside.read_bytes() == b"precious\n"
