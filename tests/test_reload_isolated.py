"""A reload parses in a child under a time and a memory limit (start.reparse): whatever the
catalogue, /livez keeps answering, a catalogue past a limit is refused and the running pod
stays as it was, and a storm of reload requests is at most one reload running and one queued."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.wait import holds_for
from start.catalogue import Catalogue
from start.catalogue import load as load_catalogue
from start.catalogue.isolated import BOOTSTRAP
from tests.engine_harness import running_pod, until
from tests.support import PYTHON, ROOT, RunningPod, pid_alive, wait_for, write_catalogue

SLEEPER = "sh -c 'trap \"exit 0\" TERM; while :; do sleep 0.05; done'"
LIVEZ_DEADLINE = 5.0  # seconds: generous on two noisy cores; a blocked loop took 11 s
# numprocs=1000 of a 20,000-word command: each process's argv is ~1 MiB of small strings.
GREEDY = ("[program:greedy]\ncommand=/bin/echo " + "ab " * 20_000 + "\nnumprocs=1000\n"
          "process_name=%(program_name)s_%(process_num)d\n")
# numprocs=1000 of a 60,000-character word: shlex takes ~50 ms over each (its time grows with
# the square of a word's length), under the 64 KiB limit.
SLOW = ("[program:slow]\ncommand=/bin/echo%(process_num)d" + "x" * 60_000 + "\nnumprocs=1000\n"
        "process_name=%(program_name)s_%(process_num)d\n")


class Livez:
    """/livez asked in a loop from a thread while a test runs: every answer's status, and how
    long it took."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[float, int, float]] = []  # (when, status, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/livez",
                                            timeout=LIVEZ_DEADLINE) as answer:
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError:
                status = 0  # no answer within the deadline
            self.answers.append((began, status, time.monotonic() - began))
            self._stop.wait(0.01)

    def stop(self) -> list[tuple[float, int, float]]:
        self._stop.set()
        self._thread.join(LIVEZ_DEADLINE + 5)
        return self.answers

    def between(self, start: float, end: float) -> list[tuple[float, int, float]]:
        return [a for a in self.answers if start <= a[0] <= end]


def _pod(tmp_path: Path, env: dict[str, str] | None = None) -> RunningPod:
    catalogue = write_catalogue(tmp_path / "cat", {"keep": {"command": SLEEPER,
                                                            "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home", env=env)
    pod.wait_event("spawned")
    pod.wait_event("watching_catalogue")
    return pod


def _parse_children(pod: RunningPod) -> list[int]:
    """The engine's children that are a reload's parse."""
    found = []
    path = Path(f"/proc/{pod.engine_pid}/task/{pod.engine_pid}/children")
    for pid in path.read_text().split():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if BOOTSTRAP.encode() in command:
            found.append(int(pid))
    return found


def _assert_answered(answers: list[tuple[float, int, float]]) -> None:
    bad = [a for a in answers if a[1] != 200 or a[2] > LIVEZ_DEADLINE]
    assert answers and not bad, f"/livez failed or was slow: {bad[:5]}"


def test_huge_command_is_refused_at_once_and_livez_answers(tmp_path: Path) -> None:
    """The 1 MiB one-word command that froze /livez for 11 s: refused in one line within
    seconds; /livez 200 while the reload runs; the running service untouched."""
    pod = _pod(tmp_path)
    keep = pod.events("spawned")[0]["pid"]
    livez = Livez(pod.health_port)
    try:
        wait_for(lambda: len(livez.answers) >= 5, 10, "/livez answering")
        began = time.monotonic()
        big = tmp_path / "cat" / "conf.d" / "big.conf"
        big.write_text("[program:big]\ncommand=/bin/true" + "x" * ((1 << 20) - 100) + "\n")
        rejected = pod.wait_event("reload_rejected", timeout=10)[0]
        ended = time.monotonic()
        assert ended - began < 10
        assert any(f"{big}:2: [program:big] command: is " in p
                   and "characters long, more than 65536; put a long command in a script" in p
                   for p in rejected["problems"]), rejected["problems"]
        wait_for(lambda: livez.between(ended, time.monotonic()), 10, "/livez after the reload")
        _assert_answered(livez.between(began, ended))  # sampled while it ran
        assert pod.events("spawned") == [pod.events("spawned")[0]]
        assert pod.events("spawned")[0]["pid"] == keep and not pod.events("exited")
    finally:
        answers = livez.stop()
        pod.stop()
    _assert_answered(answers)


def test_parse_past_its_memory_limit_is_refused(tmp_path: Path) -> None:
    """A catalogue whose parse needs more memory than CODITECT_RELOAD_MEMORY: the child is
    refused the memory, the reload fails saying so, the pod keeps running what it ran."""
    pod = _pod(tmp_path, env={"CODITECT_RELOAD_MEMORY": "160", "CODITECT_RELOAD_TIMEOUT": "120"})
    livez = Livez(pod.health_port)
    try:
        (tmp_path / "cat" / "conf.d" / "greedy.conf").write_text(GREEDY)
        failed = pod.wait_event("reload_failed", timeout=60)[0]
        assert failed["reason"] == "memory_limit", failed
        error = failed["error"]
        assert "more than 160 MiB" in error and "CODITECT_RELOAD_MEMORY" in error, error
        assert not pod.events("reloaded") and len(pod.events("spawned")) == 1
        status = subprocess.run(
            [PYTHON, "-m", "healthz.podctl", "--socket", str(pod.run_dir / "podctl.sock"),
             "status"], capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)
        assert status.returncode == 0, status.stderr
        assert f"podctl: last reload rejected: {failed['error']}" in status.stderr.splitlines()
        wait_for(lambda: not _parse_children(pod), 10, "the parse's child reaped")
        # The limit is the reload's, not the pod's: a good catalogue reloads again.
        (tmp_path / "cat" / "conf.d" / "greedy.conf").unlink()
        pod.wait_event("reloaded", timeout=30)
    finally:
        answers = livez.stop()
        pod.stop()
    _assert_answered(answers)


def test_parse_past_its_time_limit_is_stopped(tmp_path: Path) -> None:
    """A catalogue that takes a minute to parse, with CODITECT_RELOAD_TIMEOUT=2: the child is
    killed at the limit, the reload fails saying so, nothing is left of it."""
    pod = _pod(tmp_path, env={"CODITECT_RELOAD_TIMEOUT": "2"})
    livez = Livez(pod.health_port)
    try:
        (tmp_path / "cat" / "conf.d" / "slow.conf").write_text(SLOW)
        wait_for(lambda: _parse_children(pod), 10, "the parse running")
        failed = pod.wait_event("reload_failed", timeout=30)[0]
        assert failed["reason"] == "time_limit", failed
        assert "longer than 2 s" in failed["error"] and "CODITECT_RELOAD_TIMEOUT" in failed["error"]
        wait_for(lambda: not _parse_children(pod), 10, "the parse's child killed and reaped")
        assert not pod.events("reloaded") and len(pod.events("spawned")) == 1
        assert not pod.events("internal_error")
    finally:
        answers = livez.stop()
        pod.stop()
    _assert_answered(answers)


def test_drain_stops_a_running_parse(tmp_path: Path) -> None:
    """SIGTERM while a reload's parse runs: the parse is killed with the drain, the pod exits 0
    in time, and nothing of the parse is left."""
    pod = _pod(tmp_path, env={"CODITECT_RELOAD_TIMEOUT": "120"})
    try:
        (tmp_path / "cat" / "conf.d" / "slow.conf").write_text(SLOW)
        parse = wait_for(lambda: _parse_children(pod), 10, "the parse running")[0]
        pod.signal(signal.SIGTERM)
        assert pod.wait(30) == 0, pod.tail()
        assert not pid_alive(parse)
        # The killed parse is not a failed reload. Whether the reload's own coroutine still
        # runs (and says `reload_ignored`) before the engine exits is a race the drain may win.
        assert not pod.events("reload_failed") and not pod.events("internal_error")
    finally:
        pod.stop()


def test_sighup_storm_is_a_few_reloads(tmp_path: Path) -> None:
    """1,000 SIGHUPs in a burst: at most one reload runs and one waits, so a handful of
    reloads in all; /livez answers 200 throughout."""
    pod = _pod(tmp_path)
    livez = Livez(pod.health_port)
    try:
        engine = pod.engine_pid
        for _ in range(1000):
            os.kill(engine, signal.SIGHUP)
        pod.wait_event("reloaded", timeout=30)

        def reloads() -> int:
            return len(pod.events("reloaded")) + len(pod.events("reload_rejected"))

        def settled() -> bool:  # no reload running, none queued: none for 2 s
            count = reloads()
            try:
                holds_for(lambda: reloads() == count, 2.0, "no further reload")
            except AssertionError:
                return False
            return True

        wait_for(settled, 60, "the reloads to end")
        assert 1 <= reloads() <= 5, reloads()
        assert not pod.events("internal_error")
    finally:
        answers = livez.stop()
        pod.stop()
    _assert_answered(answers)


async def test_requests_join_the_queued_reload(tmp_path: Path) -> None:
    """While a reload's parse runs, a hundred requests are one more reload, not a hundred; each
    request gets that reload's answer."""
    catalogue = write_catalogue(tmp_path / "cat", {"keep": {"command": SLEEPER,
                                                            "startsecs": "0"}})
    async with running_pod(catalogue, tmp_path / "logs") as (pod, _recorder):
        release = asyncio.Event()
        parses = 0

        async def gated() -> Catalogue:
            nonlocal parses
            parses += 1
            await release.wait()
            return load_catalogue(catalogue)

        pod.loader = gated
        first = asyncio.ensure_future(pod.reload())
        await until(lambda: parses == 1, 10, "the first parse running")
        rest = [asyncio.ensure_future(pod.reload()) for _ in range(100)]
        await asyncio.sleep(0)
        assert parses == 1
        release.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *rest), 30)
        assert parses == 2
        assert all(answer == (True, ["no change"]) for answer in answers)


def test_bad_limits_are_a_usage_error(tmp_path: Path) -> None:
    for name, value in (("CODITECT_RELOAD_TIMEOUT", "soon"), ("CODITECT_RELOAD_MEMORY", "0"),
                        ("CODITECT_RELOAD_MEMORY", "1.5")):
        done = subprocess.run([PYTHON, "-m", "start", "--check", "--catalogue",
                               str(tmp_path / "none")], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), name: value},
                              cwd=ROOT, timeout=30, check=False)
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert f"{name}: {value!r} is not a" in last and "Traceback" not in done.stderr, last


def test_long_values_are_refused_before_shlex(tmp_path: Path) -> None:
    """A 300,000-character word in `environment`, in `[supervisord] environment` (numprocs repeats a
    program's for each process) or in an exec: probe: one line each, at once, never seconds of
    shlex."""
    word = "x" * 300_000  # three of them fit in a file's 1 MiB
    main = tmp_path / "supervisord.conf"
    main.write_text(
        f'[supervisord]\nenvironment=BIG="{word}"\n\n'
        f'[program:env]\ncommand=/bin/sleep 60\nnumprocs=100\n'
        f'process_name=%(program_name)s_%(process_num)d\nenvironment=HUGE="{word}"\n\n'
        f'[program:probed]\ncommand=/bin/sleep 60\n\n'
        f'[health:probed]\nready=exec:/bin/true {word}\n')
    began = time.monotonic()
    done = subprocess.run([PYTHON, "-m", "start", "--check", "--catalogue", str(main)],
                          capture_output=True, text=True, env={**os.environ,
                                                               "PYTHONPATH": str(ROOT)},
                          cwd=ROOT, timeout=60, check=False)
    assert time.monotonic() - began < 10  # shlex: ~1 s a word, for each process
    assert done.returncode == 78, done.stderr
    lines = done.stderr.splitlines()
    for where in (f"{main}:2: [supervisord] environment: is 300006 characters long",
                  f"{main}:8: [program:env] environment: is 300007 characters long",
                  f"{main}:14: [health:probed] ready: the exec: command is 300010 characters"):
        assert any(line.startswith(f"coditect-start: {where}") for line in lines), (where, lines)
    assert "Traceback" not in done.stderr
