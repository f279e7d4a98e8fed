"""The real Eclipse Theia (scripts/theia-build) in the demo pod, and a headless chromium
(Playwright driving Debian's /usr/bin/chromium: no browser is ever downloaded) to use it.

Chromium starts a crash handler that outlives it (reparented to PID 1); it is given its own
configuration directory, and whatever still runs from that directory when the browser is closed
is ended by pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support import ROOT, pid_alive, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-crash-reporter", "--disable-breakpad"]
WORKBENCH_DEADLINE = 60.0  # page load → workbench on a busy 2-core machine
TERMINAL_DEADLINE = 30.0


def theia_app() -> Path | None:
    """The cached Theia build, or None (`scripts/theia-build --path` exits 3 when absent)."""
    done = subprocess.run([str(ROOT / "scripts" / "theia-build"), "--path"],
                          capture_output=True, text=True, timeout=30, check=False)
    path = Path(done.stdout.strip())
    return path if done.returncode == 0 and (path / "lib" / "backend" / "main.js").exists() \
        else None


def skip_reason() -> str | None:
    """Why the end-to-end tests cannot run here, in one line; None when they can."""
    if theia_app() is None:
        return "no Theia build: run `make theia` (make e2e and make test build it when online)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no {CHROMIUM}: apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no playwright: make bootstrap installs it"
    if shutil.which("nginx") is None:
        return "no nginx on PATH"
    return None


def theia_env(base: Path) -> dict[str, str]:
    """The demo pod's environment for the real Theia: its app and a fresh configuration
    directory (Theia keeps the last workspace there and would reopen it)."""
    app = theia_app()
    assert app is not None
    config = base / "theia-config"
    config.mkdir(exist_ok=True)
    # HISTFILE: the terminals' shells must not append the tests' commands to the user's history.
    return {"CODITECT_THEIA_APP": str(app), "THEIA_CONFIG_DIR": str(config),
            "HISTFILE": "/dev/null"}


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless chromium; closed, and its crash handler ended, afterwards."""
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="coditect-chromium-"))
    environment: dict[str, str | float | bool] = {
        **os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache")}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=environment,
                timeout=60_000)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        leftovers = processes_mentioning(str(home))
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not any(pid_alive(p) for p in leftovers), 10, "chromium's helpers gone")
        shutil.rmtree(home, ignore_errors=True)


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line or environment names `text` (ours: read as root or owner)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for name in ("cmdline", "environ"):
            try:
                if text.encode() in (entry / name).read_bytes():
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return found


def open_workbench(browser: Browser, url: str) -> Page:
    """A new tab on `url`, returned once Theia's workbench has replaced its preload screen."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url, timeout=WORKBENCH_DEADLINE * 1000)
    page.wait_for_selector("#theia-app-shell", timeout=WORKBENCH_DEADLINE * 1000)
    page.wait_for_selector(".theia-preload", state="detached",
                           timeout=WORKBENCH_DEADLINE * 1000)
    return page


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its command line (following /proc's children lists)."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            found[child] = command.decode(errors="replace").strip()
            todo.append(child)
    return found


def shells_of(theia_pid: int) -> set[int]:
    """The terminal shells Theia's pty host started (bash, the default shell here)."""
    return {pid for pid, command in descendants(theia_pid).items()
            if os.path.basename(command.split(" ")[0]) == "bash"}


def open_terminal(page: Page, theia_pid: int, commands: str, done: Path) -> int:
    """Open a new terminal (Ctrl+Shift+`), wait for its shell, type `commands` into it until
    they have run (they create `done`); the new shell's pid. Keys typed before the terminal
    is attached to its shell are lost, so typing is repeated, under a deadline."""
    before = shells_of(theia_pid)
    count = page.locator(".xterm").count()
    page.keyboard.press("Control+Shift+Backquote")
    page.wait_for_function(f"document.querySelectorAll('.xterm').length > {count}",
                           timeout=TERMINAL_DEADLINE * 1000)
    new: set[int] = wait_for(lambda: shells_of(theia_pid) - before, TERMINAL_DEADLINE,
                             "the new terminal's shell", interval=0.1)
    deadline = time.monotonic() + TERMINAL_DEADLINE
    while not done.exists():
        assert time.monotonic() < deadline, f"{commands!r} never ran in the terminal"
        page.locator(".xterm-helper-textarea").last.focus()
        page.keyboard.type(commands + "\n")
        with contextlib.suppress(AssertionError):
            wait_for(done.exists, 5, str(done), interval=0.1)
    return min(new)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def figure(name: str, value: Any) -> None:
    """A measured figure, printed for docs/BENCHMARKS.md (shown with `pytest -s`)."""
    print(f"FIGURE {name}: {value}")


def require_e2e() -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason, allow_module_level=True)
