"""The newcomer's path, as the README tells it: a fresh clone, `make demo` running the pod, the
README's "while it runs" commands answering as quoted, and Ctrl-C (SIGINT to its process
group) draining it: the pod exits 0 and leaves nothing behind.

Offline, as every test: the clone's `.venv` is made before `make demo` from the wheelhouse
scripts/bootstrap keeps outside the checkout (the package's dependencies and its build
backend), with the clone's own package installed editable, so the demo runs the clone's code,
not the checkout's. The development tools (pytest, mypy, playwright, …) are not in the
wheelhouse and the demo needs none of them: the venv is marked installed as bootstrap marks it,
and `make demo`'s bootstrap then finds nothing to do. Reusing the checkout's venv instead would
run the checkout's sources, and prove nothing of the clone.

The demo's ports are fixed (its catalogue and nginx's configuration), so the pod runs in a
network namespace of its own (`unshare --net`, root): the README's ports are then its own,
whatever this machine runs, and the README's commands run in that namespace (`nsenter`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.demo_support import BOOT_DEADLINE, world_traversable_tmp
from tests.support import ROOT, wait_for
from tests.test_wheel_install import wheelhouse

SETUP_DEADLINE = 300.0  # clone, venv, editable install (offline): ~20 s here
COMMAND_DEADLINE = 30.0
DRAIN_DEADLINE = 40.0  # the demo's drain timeout (25 s) and make's own exit

pytestmark = pytest.mark.timeout(SETUP_DEADLINE + BOOT_DEADLINE + 120 + 3 * DRAIN_DEADLINE)


def readme_commands() -> list[str]:
    """The README's "while it runs" commands, as it quotes them (comments cut)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("While it runs, from another shell:", 1)[1].split("```sh\n", 1)[1]
    block = block.split("```", 1)[0]
    return [line.split(" #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_states_the_newcomer_path() -> None:
    """What the other test follows: the demo command, the three commands while it runs, and
    what this is, in three lines under the title."""
    text = (ROOT / "README.md").read_text()
    assert "make demo " in text.split("```sh\n", 1)[1].split("```", 1)[0]
    assert [c.split()[-1] for c in readme_commands()] == [
        "'http://localhost:8081/readyz?verbose'", "'http://localhost:8000/health'", "status"]
    title, blank, *intro = text.splitlines()[:6]
    assert title == "# coditect-pod" and blank == ""
    assert all(intro[:3]) and intro[3] == "", intro


def _step(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=SETUP_DEADLINE, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-3000:]}"


def _clean_environment(home: Path) -> dict[str, str]:
    """A newcomer's shell: nothing of this checkout, its venv or the coverage of `make test`."""
    kept = {k: v for k, v in os.environ.items()
            if not k.startswith(("CODITECT_", "COVERAGE_", "VIRTUAL_ENV", "PYTHON"))}
    path = ":".join(p for p in kept.get("PATH", "/usr/bin:/bin").split(":")
                    if not p.startswith(str(ROOT)))
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    # The same cache as ours: the wheelhouse and the Theia build bootstrap checks for.
    return {**kept, "PATH": path, "XDG_CACHE_HOME": cache, "PYTHONDONTWRITEBYTECODE": "1",
            "CODITECT_NGINX_DIR": str(home / "nginx")}


def _fresh_clone(base: Path, env: dict[str, str]) -> Path:
    clone = base / "coditect-pod"
    _step(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], base, env)
    venv = clone / ".venv"
    _step([sys.executable, "-m", "venv", "--without-pip", str(venv)], clone, env)
    _step([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
           "-q", "--disable-pip-version-check", "--no-index", "--find-links", str(wheelhouse()),
           "-e", str(clone)], clone, env)
    # bootstrap's own mark of a venv set up for this pyproject.toml (scripts/bootstrap).
    key = hashlib.sha256((clone / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (venv / f".installed-{key}").touch()
    return clone


@contextlib.contextmanager
def _demo(clone: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`make demo` in the clone, in a network namespace and a process group of its own; ended
    by its group's id whatever the test did."""
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", "ip link set lo up && exec make -s demo"],
            cwd=clone, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        yield make
    finally:
        if make.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)


def _in_pod_network(make: subprocess.Popen[bytes], command: str, clone: Path,
                    env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net=/proc/{make.pid}/ns/net", "--", "sh", "-c",
                           command], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=COMMAND_DEADLINE, check=False)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _events(log: Path) -> list[dict[str, object]]:
    found = []
    for line in log.read_bytes().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("stream") == "event":
                found.append(record)
    return found


def test_a_fresh_clone_runs_the_demo_as_the_readme_says() -> None:
    for tool in ("git", "make", "nginx", "unshare", "nsenter", "ip"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"needs {tool}")
    if os.geteuid() != 0:
        pytest.skip("needs root: the demo gets a network namespace of its own (unshare --net)")
    base = world_traversable_tmp("coditect-newcomer-")  # nginx's workers read the clone
    try:
        env = _clean_environment(base)
        clone = _fresh_clone(base, env)
        log = base / "make-demo.log"
        with _demo(clone, env, log) as make:
            commands = readme_commands()

            def answered(command: str) -> subprocess.CompletedProcess[str] | None:
                assert make.poll() is None, f"make demo exited {make.returncode}:\n" \
                    f"{log.read_text(errors='replace')[-3000:]}"
                done = _in_pod_network(make, command, clone, env)
                return done if done.returncode == 0 and done.stdout else None

            # The first answers once the pod is ready; the rest must answer at once then.
            readyz = wait_for(
                lambda: (d := answered(commands[0])) and "readyz check passed" in d.stdout
                and d, BOOT_DEADLINE + 60,
                lambda: f"{commands[0]} to pass\n{log.read_text(errors='replace')[-3000:]}",
                interval=0.5)
            assert "[+]theia ok" in readyz.stdout
            health = _in_pod_network(make, commands[1], clone, env)
            assert health.returncode == 0, health.stderr
            # 200 as the README's `curl -sf` needs: `warn` while the non-critical file
            # monitor is still starting, `fail` would be a 503.
            assert json.loads(health.stdout)["status"] in ("pass", "warn")
            status = _in_pod_network(make, commands[2], clone, env)
            assert status.returncode == 0, status.stdout + status.stderr
            assert all(name in status.stdout for name in ("theia", "nginx", "codi2"))

            os.killpg(make.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
            make.wait(DRAIN_DEADLINE)
            events = _events(log)
            exits = [e for e in events if e.get("event") == "exit"]
            assert [e.get("code") for e in exits] == [0], log.read_text(errors="replace")[-3000:]
            assert [e.get("in_time") for e in events if e.get("event") == "drained"] == [True]
            # make itself got the SIGINT too and dies of it, as make does: without a terminal
            # there is no foreground group for scripts/foreground to give the pod alone (at a
            # terminal make exits with the pod's 0: tests/test_make_demo.py).
            assert make.returncode == -signal.SIGINT, make.returncode
            assert not _group_alive(make.pid)
    finally:
        shutil.rmtree(base, ignore_errors=True)
