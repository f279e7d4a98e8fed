"""coditect-file-monitor as a real process on real files: events, checksums, ignore rules,
rotation, storms, unreadable and vanishing files, a disappearing ROOT, both observers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support import http_get, unmeasured, wait_for

OBSERVERS = {
    "inotify": [],
    "poll": ["--poll", "--poll-interval", "0.1"],
}
Event = dict[str, Any]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Monitor:
    """One running `python -m coditect_file_monitor`, its events log, stderr and metrics."""

    def __init__(self, proc: subprocess.Popen[bytes], events_log: Path, stderr: Path) -> None:
        self.proc = proc
        self.events_log = events_log
        self.stderr = stderr
        started = wait_for(lambda: self.diag("watching") or self._exited(),
                           what="the monitor to start")
        assert isinstance(started, list), f"monitor exited:\n{self.stderr.read_text()}"
        self.started = started[0]
        self.metrics_addr: str = self.started["metrics_addr"]

    def _exited(self) -> bool:
        return self.proc.poll() is not None

    def diag(self, message: str) -> list[dict[str, Any]]:
        """The monitor's own log lines (stderr) with this message."""
        lines = self.stderr.read_text().splitlines() if self.stderr.exists() else []
        records = [json.loads(line) for line in lines if line.startswith("{")]
        return [r for r in records if r["message"] == message]

    def events(self) -> list[Event]:
        """Every complete line of the events log and its rotated copies, oldest first."""
        rotated = sorted(
            self.events_log.parent.glob(self.events_log.name + ".*"),
            key=lambda p: -int(p.suffix[1:]),
        )
        out: list[Event] = []
        for path in [*rotated, self.events_log]:
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            out += [json.loads(line) for line in text.splitlines(keepends=True)
                    if line.endswith("\n")]
        return out

    def wait_events(self, count: int, *, path: str | None = None,
                    timeout: float = 10.0) -> list[Event]:
        """Wait until `count` events (on `path`, when given) are in the log; return those."""
        def enough() -> list[Event] | None:
            got = [e for e in self.events() if path is None or e["file_path"] == path]
            return got if len(got) >= count else None

        got: list[Event] = wait_for(enough, timeout, f"{count} events on {path or 'any path'}")
        return got

    def get(self, path: str) -> tuple[int, str]:
        return http_get(f"http://{self.metrics_addr}{path}")

    def metric(self, name: str) -> float:
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in /metrics")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)


@pytest.fixture
def start_monitor(tmp_path: Path) -> Iterator[Callable[..., Monitor]]:
    """Start monitors on demand; every one is ended by pid at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(root: Path, *args: str, events_log: Path | None = None,
              user: str | None = None, cwd: Path | None = None,
              measured: bool = True) -> Monitor:
        events_log = events_log or tmp_path / f"events-{len(procs)}.log"
        stderr = (cwd or tmp_path) / f"stderr-{len(procs)}.log"
        prefix = []
        if user:
            prefix = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"]
        command = [*prefix, sys.executable, "-m", "coditect_file_monitor", str(root),
                   "--recursive", "--checksums", "--events-log", str(events_log),
                   "--metrics-addr", "127.0.0.1:0", *args]
        with stderr.open("wb") as err:
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err,
                                    cwd=cwd or tmp_path, env=None if measured else unmeasured())
        procs.append(proc)
        return Monitor(proc, events_log, stderr)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def kinds(events: list[Event]) -> list[tuple[str, str]]:
    return [(e["event_type"], e["file_path"]) for e in events]


# -- the event stream -----------------------------------------------------------------------


@pytest.mark.parametrize("observer", OBSERVERS)
def test_created_modified_deleted_carry_the_right_checksums(
    start_monitor: Callable[..., Monitor], root: Path, observer: str
) -> None:
    """A file's life is three events; created and modified carry the size and sha256 read."""
    mon = start_monitor(root, *OBSERVERS[observer])
    (root / "a.txt").write_bytes(b"one")
    created = mon.wait_events(1)[0]
    (root / "a.txt").write_bytes(b"second version")
    modified = mon.wait_events(2)[1]
    (root / "a.txt").unlink()
    deleted = mon.wait_events(3)[2]

    assert (created["event_type"], created["file_path"]) == ("created", "a.txt")
    assert (created["size"], created["sha256"]) == (3, sha256(b"one"))
    assert (modified["event_type"], modified["size"]) == ("modified", 14)
    assert modified["sha256"] == sha256(b"second version")
    assert (deleted["event_type"], deleted["size"], deleted["sha256"]) == ("deleted", None, None)
    for event in (created, modified, deleted):
        assert event["timestamp_utc"].endswith("Z")
        assert event["dest_path"] is None and event["is_directory"] is False
        assert "sha256_error" not in event
    assert len({e["id"] for e in (created, modified, deleted)}) == 3
    assert mon.stop() == 0
    assert len(mon.events()) == 3


@pytest.mark.parametrize("observer", OBSERVERS)
def test_a_move_names_both_paths_and_hashes_the_destination(
    start_monitor: Callable[..., Monitor], root: Path, observer: str
) -> None:
    """A rename inside ROOT is one `moved` event with `dest_path` and the file's checksum."""
    (root / "sub").mkdir()
    (root / "old.txt").write_bytes(b"payload")
    mon = start_monitor(root, *OBSERVERS[observer])
    os.rename(root / "old.txt", root / "sub" / "new.txt")
    [moved] = mon.wait_events(1)
    assert moved["event_type"] == "moved"
    assert (moved["file_path"], moved["dest_path"]) == ("old.txt", "sub/new.txt")
    assert (moved["size"], moved["sha256"]) == (7, sha256(b"payload"))


def test_a_directory_move_is_one_event_and_new_directories_are_reported(
    start_monitor: Callable[..., Monitor], root: Path
) -> None:
    """Directories: created/moved/deleted with size null; a moved tree is one event."""
    (root / "tree" / "deep").mkdir(parents=True)
    for n in range(5):
        (root / "tree" / "deep" / f"f{n}").write_text("x")
    mon = start_monitor(root)
    os.rename(root / "tree", root / "renamed")
    (root / "fresh").mkdir()
    (root / "fresh" / "inside.txt").write_bytes(b"in")
    events = mon.wait_events(3)
    assert mon.stop() == 0
    events = mon.events()
    assert [(e["event_type"], e["file_path"], e["dest_path"], e["is_directory"], e["size"])
            for e in events[:2]] == [
        ("moved", "tree", "renamed", True, None),
        ("created", "fresh", None, True, None),
    ]
    assert kinds(events[2:]) == [("created", "fresh/inside.txt")]
    assert events[2]["sha256"] == sha256(b"in")


def test_a_burst_on_one_file_is_one_event(
    start_monitor: Callable[..., Monitor], root: Path
) -> None:
    """200 writes in a row to one new file: one `created` event with the final content."""
    mon = start_monitor(root)
    path = root / "burst.log"
    with path.open("wb") as f:
        for n in range(200):
            f.write(f"line {n}\n".encode())
            f.flush()
    mon.wait_events(1)
    assert mon.metric("coditect_file_monitor_coalesced_events_total") >= 1
    assert mon.stop() == 0
    [event] = mon.events()
    assert event["event_type"] == "created"
    assert event["sha256"] == sha256(path.read_bytes())


def test_without_recursive_only_the_top_level_is_watched(
    start_monitor: Callable[..., Monitor], root: Path, tmp_path: Path
) -> None:
    """Without --recursive a file in a subdirectory is not reported."""
    (root / "sub").mkdir()
    events_log = tmp_path / "flat.log"
    command = [sys.executable, "-m", "coditect_file_monitor", str(root), "--events-log",
               str(events_log), "--metrics-addr", "127.0.0.1:0"]
    with (tmp_path / "flat.err").open("wb") as err:
        proc = subprocess.Popen(command, stderr=err)
    try:
        mon = Monitor(proc, events_log, tmp_path / "flat.err")
        (root / "sub" / "hidden.txt").write_text("no")
        (root / "top.txt").write_text("yes")
        mon.wait_events(1)
        assert mon.stop() == 0
        assert kinds(mon.events()) == [("created", "top.txt")]
        assert "sha256" not in mon.events()[0]  # no --checksums: no sha256 key at all
        assert mon.events()[0]["size"] == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_events_go_to_stdout_without_an_events_log(root: Path, tmp_path: Path) -> None:
    """No --events-log: one JSON object a line on stdout, diagnostics on stderr."""
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "coditect_file_monitor", str(root),
                                 "--checksums", "--format", "json"], stdout=o, stderr=e)
    try:
        wait_for(lambda: "watching" in err.read_text(), what="the monitor to start")
        (root / "x").write_bytes(b"x")
        wait_for(lambda: out.read_text().endswith("\n"), what="an event on stdout")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [line] = out.read_text().splitlines()
    assert json.loads(line)["sha256"] == sha256(b"x")


# -- what is never reported -----------------------------------------------------------------


def test_ignore_rules_match_a_component_at_any_depth(
    start_monitor: Callable[..., Monitor], root: Path
) -> None:
    """--ignore names match whole path components anywhere; globs work; the rest is reported."""
    mon = start_monitor(root, "--ignore", ".git,node_modules,target", "--ignore", "*.swp")
    for rel in [".git/HEAD", "web/node_modules/pkg/index.js", "a/b/target/out.o",
                "notes.txt.swp", "src/.git/config"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("ignored")
    for rel in ["src/git/config", "node_modules_backup/x", "targets.txt"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("kept")
    (root / "last.txt").write_text("sentinel")
    mon.wait_events(1, path="last.txt")
    # A move out of an ignored directory is a creation; into one, a deletion.
    os.rename(root / ".git" / "HEAD", root / "HEAD.restored")
    os.rename(root / "targets.txt", root / "a" / "b" / "target" / "targets.txt")
    mon.wait_events(1, path="targets.txt", timeout=10)
    mon.wait_events(1, path="HEAD.restored")
    assert mon.stop() == 0
    reported = {e["file_path"] for e in mon.events()}
    assert reported == {"src", "src/git", "src/git/config", "node_modules_backup",
                        "node_modules_backup/x", "targets.txt", "last.txt", "web", "a", "a/b",
                        "HEAD.restored"}
    last_two = sorted(kinds(mon.events()[-2:]))
    assert last_two == [("created", "HEAD.restored"), ("deleted", "targets.txt")]


def test_its_own_logs_are_never_reported_even_inside_root(
    start_monitor: Callable[..., Monitor], root: Path
) -> None:
    """Events log, its rotated copies and the trace log live in ROOT and never appear."""
    logs = root / "logs"
    mon = start_monitor(root, "--trace-log", str(logs / "trace.log"),
                        "--events-log-max-bytes", "1500", "--events-log-backups", "50",
                        events_log=logs / "events.log")
    for n in range(20):
        (root / f"f{n}").write_text(str(n))
    mon.wait_events(20)
    assert mon.stop() == 0
    assert len(list(logs.glob("events.log.*"))) >= 2  # it did rotate inside ROOT
    assert (logs / "trace.log").stat().st_size > 0
    assert sorted(e["file_path"] for e in mon.events()) == sorted(f"f{n}" for n in range(20))


# -- the events log -------------------------------------------------------------------------


def test_rotation_keeps_every_event_exactly_once(
    start_monitor: Callable[..., Monitor], root: Path
) -> None:
    """With a tiny size limit every event is in exactly one file, each file under the limit."""
    mon = start_monitor(root, "--events-log-max-bytes", "2000", "--events-log-backups", "1000")
    names = [f"file-{n:03}" for n in range(300)]
    for name in names:
        (root / name).write_text(name)
    mon.wait_events(300)
    assert mon.stop() == 0
    events = mon.events()
    assert sorted(e["file_path"] for e in events) == names
    assert len({e["id"] for e in events}) == 300
    files = list(mon.events_log.parent.glob(mon.events_log.name + "*"))
    assert len(files) > 20
    assert all(f.stat().st_size <= 2000 for f in files)
    assert all(f.read_bytes().endswith(b"\n") for f in files)


# -- robustness -----------------------------------------------------------------------------


def test_a_storm_of_50000_writes_keeps_memory_flat_and_counts_drops(
    start_monitor: Callable[..., Monitor], root: Path
) -> None:
    """50,000 writes over 2,000 files with a 64-entry queue: drops counted in /metrics and
    logged a few times, RSS flat, the monitor still healthy and reporting afterwards."""
    # Unmeasured: traced by coverage, the storm would take minutes.
    mon = start_monitor(root, "--queue-size", "64", measured=False)
    proc = psutil.Process(mon.proc.pid)
    baseline = proc.memory_info().rss
    peak = baseline
    payload = b"x" * 64
    for n in range(50_000):
        fd = os.open(root / f"s{n % 2000}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, payload)
        os.close(fd)
        if n % 1000 == 0:
            peak = max(peak, proc.memory_info().rss)
    wait_for(lambda: mon.metric("coditect_file_monitor_queue_depth") == 0,
             what="the queue to drain")
    peak = max(peak, proc.memory_info().rss)

    assert mon.proc.poll() is None
    assert peak - baseline < 40 * 2**20, f"RSS grew from {baseline} to {peak}"
    dropped = mon.metric("coditect_file_monitor_dropped_events_total")
    assert dropped > 0
    assert mon.get("/healthz") == (200, "ok\n")
    warnings = mon.diag("queue full, changes dropped")
    assert 1 <= len(warnings) <= 10  # rate-limited, not one line per drop
    (root / "after-the-storm").write_text("still here")
    mon.wait_events(1, path="after-the-storm")
    assert mon.stop() == 0
    assert mon.diag("stopped")[0]["dropped_total"] == dropped


def test_a_file_that_vanishes_before_hashing_is_reported_with_a_reason(
    start_monitor: Callable[..., Monitor], root: Path
) -> None:
    """Created and deleted within the coalescing window: `created` with sha256 null and
    reason `vanished`, then `deleted`; logged, no crash."""
    mon = start_monitor(root)
    (root / "tmp.swp").write_text("gone soon")
    (root / "tmp.swp").unlink()
    created, deleted = mon.wait_events(2)
    assert (created["event_type"], created["sha256"], created["size"]) == ("created", None, None)
    assert created["sha256_error"] == "vanished"
    assert deleted["event_type"] == "deleted"
    wait_for(lambda: mon.diag("cannot hash a file"), what="the vanished file to be logged")
    labels = 'coditect_file_monitor_checksum_errors_total{reason="vanished"}'
    assert mon.metric(labels) == 1
    assert mon.proc.poll() is None


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to switch to an unprivileged user")
def test_unreadable_files_and_directories_as_an_unprivileged_user(
    start_monitor: Callable[..., Monitor],
) -> None:
    """Run as `nobody`: a mode-000 file is reported with `permission denied`, locked
    directories (before and after start) are survived, and later changes still reported."""
    base = Path(tempfile.mkdtemp(prefix="fm-nobody-"))
    try:
        base.chmod(0o755)
        ws, logs = base / "ws", base / "logs"
        ws.mkdir(mode=0o777)
        logs.mkdir()
        ws.chmod(0o777)
        shutil.chown(logs, "nobody")
        (ws / "locked-before").mkdir(mode=0o000)
        mon = start_monitor(ws, events_log=logs / "events.log", user="nobody", cwd=logs)
        secret = ws / "secret"
        secret.write_text("root only")
        secret.chmod(0o000)
        (ws / "locked-after").mkdir(mode=0o000)
        (ws / "readable").write_text("fine")
        mon.wait_events(1, path="readable")
        mon.wait_events(1, path="secret")
        assert mon.stop() == 0
        by_path = {e["file_path"]: e for e in mon.events()}
        assert by_path["secret"]["sha256"] is None
        assert by_path["secret"]["sha256_error"] == "permission denied"
        assert by_path["readable"]["sha256"] == sha256(b"fine")
        assert by_path["locked-after"]["is_directory"] is True
        assert mon.diag("cannot hash a file")[0]["reason"] == "permission denied"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("observer", OBSERVERS)
def test_symlink_loops_are_not_followed(
    start_monitor: Callable[..., Monitor], root: Path, observer: str
) -> None:
    """Links to `.` and `..` do not send either observer round; a new link is reported as
    itself, never hashed through."""
    (root / "a").mkdir()
    (root / "loop").symlink_to(".")
    (root / "a" / "up").symlink_to("..")
    mon = start_monitor(root, *OBSERVERS[observer])
    (root / "a" / "to-zero").symlink_to("/dev/zero")
    (root / "a" / "real.txt").write_bytes(b"real")
    mon.wait_events(1, path="a/real.txt")
    mon.wait_events(1, path="a/to-zero")
    assert mon.stop() == 0
    by_path = {e["file_path"]: e for e in mon.events()}
    assert by_path["a/to-zero"]["sha256"] is None
    assert by_path["a/to-zero"]["sha256_error"] == "symlink, not followed"
    assert by_path["a/real.txt"]["sha256"] == sha256(b"real")
    assert set(by_path) == {"a/to-zero", "a/real.txt"}


@pytest.mark.parametrize("observer", OBSERVERS)
def test_root_that_disappears_is_waited_for(
    start_monitor: Callable[..., Monitor], root: Path, observer: str
) -> None:
    """ROOT removed: logged, still live; ROOT back: watched again and changes reported."""
    (root / "old").write_text("old")
    mon = start_monitor(root, *OBSERVERS[observer])
    shutil.rmtree(root)
    wait_for(lambda: mon.diag("ROOT disappeared; waiting for it to come back"),
             what="the loss of ROOT to be logged")
    assert mon.get("/healthz")[0] == 200
    assert mon.metric("coditect_file_monitor_watching") == 0
    root.mkdir()
    wait_for(lambda: mon.metric("coditect_file_monitor_watching") == 1, what="ROOT to be rewatched")
    (root / "new").write_text("new")
    mon.wait_events(1, path="new")
    assert mon.proc.poll() is None
    assert mon.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_writes_out_pending_events_and_exits_0(
    start_monitor: Callable[..., Monitor], root: Path, sig: int
) -> None:
    """Events held in a 60 s coalescing window are written when the stop signal comes."""
    mon = start_monitor(root, "--coalesce-window", "60")
    for n in range(10):
        (root / f"p{n}").write_text("pending")
    wait_for(lambda: mon.metric("coditect_file_monitor_queue_depth") == 10, what="10 queued")
    assert mon.events() == []
    assert mon.stop(sig) == 0
    assert sorted(e["file_path"] for e in mon.events()) == [f"p{n}" for n in range(10)]


def test_metrics_and_liveness_answer_on_the_metrics_address(
    start_monitor: Callable[..., Monitor], root: Path
) -> None:
    """/metrics has events by type, checksum time, queue depth, drops; / and /healthz are 200."""
    mon = start_monitor(root)
    (root / "m").write_text("m")
    mon.wait_events(1)
    assert mon.get("/healthz") == (200, "ok\n")
    assert mon.get("/")[0] == 200
    assert mon.get("/nope")[0] == 404
    assert mon.metric('coditect_file_monitor_events_total{event_type="created"}') == 1
    assert mon.metric("coditect_file_monitor_checksum_seconds_count") == 1
    assert mon.metric("coditect_file_monitor_queue_depth") == 0
    assert mon.metric("coditect_file_monitor_dropped_events_total") == 0
    assert mon.metric('coditect_file_monitor_observer{kind="inotify"}') == 1


# -- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--no-such-flag"], 2),
        (["--metrics-addr", "nowhere"], 2),
        (["--poll-interval", "0"], 2),
        (["--events-log-backups", "0"], 2),
        (["--format", "xml"], 2),
    ],
)
def test_usage_errors_exit_2(root: Path, args: list[str], code: int) -> None:
    """Bad flags are usage errors: exit 2, before anything is watched."""
    result = subprocess.run([sys.executable, "-m", "coditect_file_monitor", str(root), *args],
                            capture_output=True, timeout=30)
    assert result.returncode == code, result.stderr


def test_a_missing_root_or_unusable_events_log_exits_1(tmp_path: Path) -> None:
    """Runtime failures at start-up exit 1 with one JSON line saying why."""
    missing = subprocess.run(
        [sys.executable, "-m", "coditect_file_monitor", str(tmp_path / "absent")],
        capture_output=True, timeout=30, text=True)
    assert missing.returncode == 1
    assert json.loads(missing.stderr.splitlines()[-1])["message"] == "ROOT is not a directory"
    (tmp_path / "file").write_text("not a directory")
    unusable = subprocess.run(
        [sys.executable, "-m", "coditect_file_monitor", str(tmp_path),
         "--events-log", str(tmp_path / "file" / "events.log")],
        capture_output=True, timeout=30, text=True)
    assert unusable.returncode == 1
    assert "cannot open the events log" in unusable.stderr
