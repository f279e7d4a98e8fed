"""End to end with the real IDE: the demo pod runs the Eclipse Theia of deploy/theia/ (built and
cached by scripts/theia-build) in the theia slot behind the real nginx, and a headless chromium
uses it through nginx: the workbench, terminals with processes in them, WebSockets whose Origin
Theia checks, a hung Theia replaced, what a terminal started with `nohup … &` and `setsid …`
ended with its run (kill -9, `podctl restart`), the drain with a tab connected.

Skipped, with one line saying why, when the Theia build, chromium or Playwright is absent.
The tests share one pod and one browser, in file order: the drain, which ends the pod, is last.
Figures are printed as `FIGURE name: value` (`pytest -s`) for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.demo_support import NGINX, Demo, running_demo
from tests.support import http_get, pid_alive, wait_for
from tests.theia_support import (
    chromium,
    descendants,
    figure,
    open_terminal,
    open_workbench,
    require_e2e,
    rss_kib,
    shells_of,
    theia_env,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

require_e2e()

IDE = f"{NGINX}/theia/"
THEIA_BOOT_DEADLINE = 60.0
# Theia's liveness in supervisor/conf.d/theia.conf: failures x interval + timeout, then the
# stop (SIGKILL after stopwaitsecs for a stopped process) and Theia's own start.
HANG_REPLACED_DEADLINE = 3 * 10 + 5 + 10 + 30
# What a terminal leaves behind must be gone this soon after its Theia's run ends.
ESCAPEES_GONE_DEADLINE = 1.0


def escapes(tag: int) -> str:
    """A terminal line that leaves two sleeps outside Theia's process group: `nohup … &` (a
    job: a group of its own) and `setsid …` (a session of its own, reparented to the engine)."""
    return f"nohup sleep {tag}1 >/dev/null 2>&1 & setsid sleep {tag}2 &"


def escapees(tag: int) -> dict[int, int]:
    """pid → start time (clock ticks) of each live `sleep {tag}1` and `sleep {tag}2`."""
    wanted = {f"sleep\0{tag}1\0".encode(), f"sleep\0{tag}2\0".encode()}
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes() in wanted:
                    started = start_time(int(entry.name))
                    if started is not None:
                        found[int(entry.name)] = started
    return found


def both_sleeps(tag: int) -> dict[int, int] | None:
    found = escapees(tag)
    return found if len(found) >= 2 else None


def start_time(pid: int) -> int | None:
    """The start time of `pid`, None when it is gone or a zombie (a reaped pid's is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def all_ended(found: dict[int, int]) -> bool:
    """Each of these very processes (pid and start time) has ended: a reused pid is not one."""
    return all(start_time(pid) != started for pid, started in found.items())


def check_escaped(theia: int, found: dict[int, int], count: int) -> None:
    """`count` sleeps, none in Theia's process group, the `setsid` ones not even Theia's
    descendants (in a session of their own, reparented)."""
    assert len(found) >= count, found  # a line typed again (see open_terminal) adds some
    below = descendants(theia)
    for pid in found:
        assert os.getpgid(pid) != theia
        if Path(f"/proc/{pid}/cmdline").read_bytes().endswith(b"2\0"):
            assert pid not in below and os.getsid(pid) != os.getsid(theia)


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    """The demo pod with the real Theia, its run directory created by the engine (0700)."""
    config = Path(tempfile.mkdtemp(prefix="coditect-theia-config-"))
    started = time.monotonic()
    try:
        with running_demo("coditect-theia-e2e-", env=theia_env(config),
                          boot_deadline=THEIA_BOOT_DEADLINE, make_run_dir=False) as pod:
            figure("pod start → /readyz 200 (real Theia)", f"{time.monotonic() - started:.2f} s")
            yield pod
    finally:
        shutil.rmtree(config, ignore_errors=True)


@pytest.fixture(scope="module")
def escaped() -> dict[int, int]:
    """What the terminals of the first test left outside Theia's group: pid → start time."""
    return {}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture(scope="module")
def tab(browser: Browser, demo: Demo) -> Page:
    """The IDE open through nginx in one tab, kept for the module."""
    started = time.monotonic()
    page = open_workbench(browser, IDE)
    figure("page load → workbench through nginx", f"{time.monotonic() - started:.2f} s")
    return page


def written(path: Path, text: str) -> bool:
    return path.read_text() == text


def test_workbench_and_terminals_through_nginx(demo: Demo, tab: Page,
                                               escaped: dict[int, int]) -> None:
    """The workbench renders through nginx (the run directory the engine made stays 0700, and
    the whole bundle.js arrives); two terminals run what is typed into them: their shells and
    jobs are Theia's descendants, their files land in the workspace, their tabs are shown.
    Each also leaves a `nohup` and a `setsid` sleep outside Theia's group (for the kill -9)."""
    assert stat.S_IMODE(demo.run_dir.stat().st_mode) == 0o700
    built = Path(demo.env["CODITECT_THEIA_APP"]) / "lib" / "frontend" / "bundle.js"
    with urllib.request.urlopen(f"{IDE}bundle.js", timeout=30) as answer:
        assert answer.read() == built.read_bytes()  # whole: nginx's workers wrote their temp
    theia = demo.pid("theia")
    for n in (1, 2):
        # The file first: a line whose first keys were lost (typed before the terminal was
        # attached) creates no file, so open_terminal types it again.
        open_terminal(tab, theia, f"echo ran-$((40 + {n})) > term{n}.txt; sleep 424{n} & "
                      + escapes(425 + n), demo.workspace / f"term{n}.txt")
        # The shell creates the file before echo writes into it.
        wait_for(partial(written, demo.workspace / f"term{n}.txt", f"ran-{40 + n}\n"), 5,
                 f"term{n}.txt written")
    below = descendants(theia)
    assert {"sleep 4241", "sleep 4242"} <= set(below.values()), below
    for tag in (426, 427):
        escaped.update(wait_for(partial(both_sleeps, tag), 10, f"the sleeps of escapes({tag})"))
    check_escaped(theia, escaped, 4)
    assert len(shells_of(theia)) >= 2
    assert tab.locator(".xterm").count() >= 2
    wait_for(lambda: tab.locator(".p-TabBar-tab:has-text('bash'), "
                                 ".lm-TabBar-tab:has-text('bash')").count() >= 2,
             10, "two terminal tabs titled bash")
    figure("engine RSS with the real IDE and a tab",
           f"{rss_kib(demo.pod.engine_pid) / 1024:.1f} MiB")


class PortForward:
    """`kubectl port-forward` in miniature: a local port relaying bytes to nginx's."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for s in self.sockets:
            s.close()


def test_origin_checks_pass_on_another_port(demo: Demo, browser: Browser) -> None:
    """A page served on another port (a port-forward to nginx) gets a working terminal: its
    WebSocket handshake sends `Origin: http://127.0.0.1:<that port>` and nginx passes the Host
    with that port, which is what Theia compares it with."""
    forward = PortForward(8000)
    try:
        page = open_workbench(browser, f"http://127.0.0.1:{forward.port}/theia/")
        try:
            open_terminal(page, demo.pid("theia"), "echo forwarded > fwd.txt",
                          demo.workspace / "fwd.txt")
        finally:
            page.close()
    finally:
        forward.close()


def test_origin_behind_an_ingress(demo: Demo) -> None:
    """An ingress that rewrites Host but sends X-Forwarded-Host/-Proto: the handshake with the
    browser's Origin is accepted; a foreign Origin is refused."""
    import asyncio

    import aiohttp

    async def handshake(origin: str) -> int:
        jar = aiohttp.CookieJar(unsafe=True)  # the token cookie of 127.0.0.1
        headers = {"X-Forwarded-Host": "ide.example.com", "X-Forwarded-Proto": "https"}
        async with aiohttp.ClientSession(cookie_jar=jar, headers=headers) as session:
            async with session.get(IDE) as page:
                assert page.status == 200
            url = f"{IDE}socket.io/?EIO=4&transport=websocket"
            try:
                async with session.ws_connect(url, headers={"Origin": origin}) as ws:
                    await ws.close()
                    return 101
            except aiohttp.WSServerHandshakeError as error:
                return error.status

    # In a thread of its own: Playwright's sync API keeps an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, handshake("https://ide.example.com")).result() == 101
        # Theia's socket.io refuses the upgrade (engine.io answers 400 "Bad request").
        assert pool.submit(asyncio.run, handshake("https://evil.example.com")).result() in (
            400, 403)


def test_kill_9_then_ready(demo: Demo, tab: Page, escaped: dict[int, int]) -> None:
    """kill -9 of Theia: what its terminals left with `nohup` and `setsid` is gone within 1 s
    (each checked by pid and start time); replaced and ready again; measured."""
    old = demo.pid("theia")
    assert escaped and not any(start_time(p) != s for p, s in escaped.items()), escaped
    started = time.monotonic()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: all_ended(escaped), ESCAPEES_GONE_DEADLINE,
             lambda: f"the terminals' escapees ended: {escapees(426)} {escapees(427)}")
    figure("Theia kill -9 → its terminals' nohup/setsid sleeps gone",
           f"{(time.monotonic() - started) * 1000:.0f} ms")
    wait_for(lambda: demo.status()["theia"]["pid"] not in (old, None)
             and demo.running("theia"), THEIA_BOOT_DEADLINE, "theia replaced and ready",
             interval=0.05)
    figure("Theia kill -9 → ready", f"{time.monotonic() - started:.2f} s")


def test_podctl_restart_ends_a_terminals_escapees(demo: Demo, tab: Page) -> None:
    """`podctl restart theia` with a terminal that left a `nohup` and a `setsid` sleep: both
    are gone within 1 s of the command (the stop's TERM reaches them through the run's mark),
    and Theia is ready again."""
    tab.reload()
    tab.wait_for_selector(".theia-preload", state="detached", timeout=60_000)
    theia = demo.pid("theia")
    open_terminal(tab, theia, "echo up > restart.txt; " + escapes(428),
                  demo.workspace / "restart.txt")
    found = wait_for(partial(both_sleeps, 428), 10, "the terminal's nohup and setsid sleeps")
    check_escaped(theia, found, 2)
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        restart = pool.submit(demo.podctl, "restart", "theia", timeout=THEIA_BOOT_DEADLINE)
        wait_for(lambda: all_ended(found), ESCAPEES_GONE_DEADLINE,
                 lambda: f"the terminal's escapees ended: {escapees(428)}")
        figure("podctl restart theia → its terminal's nohup/setsid sleeps gone",
               f"{(time.monotonic() - started) * 1000:.0f} ms")
        done = restart.result()
    assert done.returncode == 0, done.stdout + done.stderr
    assert demo.pid("theia") != theia and demo.running("theia")


@pytest.mark.timeout(180)
def test_a_cpu_hog_in_a_terminal_is_not_a_hang(demo: Demo, tab: Page) -> None:
    """Two busy loops (both cores) in a terminal for 60 s: Theia answers slower but answers,
    and liveness restarts nothing."""
    tab.reload()
    tab.wait_for_selector(".theia-preload", state="detached", timeout=60_000)
    theia = demo.pid("theia")
    restarts = len(demo.pod.events("spawned", service="theia"))
    hog = "for i in 1 2; do timeout 60 sh -c 'while :; do :; done' & done; echo hogging > hog.txt"
    open_terminal(tab, theia, hog, demo.workspace / "hog.txt")
    wait_for(lambda: sum("while :" in c for c in descendants(theia).values()) >= 2, 10,
             "two busy loops")
    deadline = time.monotonic() + 65
    slowest = 0.0
    while time.monotonic() < deadline:
        assert demo.status()["theia"]["pid"] == theia
        asked = time.monotonic()
        assert http_get("http://127.0.0.1:3000/")[0] == 200  # what the liveness probe asks
        slowest = max(slowest, time.monotonic() - asked)
        time.sleep(1)  # one sample a second for the hog's minute, not a wait for something
    figure("Theia GET / under a 2-core CPU hog, slowest of ~60", f"{slowest * 1000:.0f} ms")
    assert len(demo.pod.events("spawned", service="theia")) == restarts
    assert not demo.pod.events("liveness_failed", service="theia")


@pytest.mark.timeout(180)
def test_sigstop_is_replaced(demo: Demo) -> None:
    """A stopped Theia (the kernel still completes TCP handshakes for it) fails its HTTP
    liveness and is replaced; ready again within failures x interval + timeout + stopwaitsecs
    + its start. Measured."""
    old = demo.pid("theia")
    started = time.monotonic()
    os.kill(old, signal.SIGSTOP)
    try:
        wait_for(lambda: demo.status()["theia"]["pid"] not in (old, None)
                 and demo.running("theia"), HANG_REPLACED_DEADLINE,
                 "the stopped theia replaced and ready", interval=0.2)
    finally:
        if pid_alive(old):
            os.kill(old, signal.SIGCONT)
    figure("Theia SIGSTOP → replaced and ready", f"{time.monotonic() - started:.1f} s")


def test_drain_with_a_tab_and_two_terminals(demo: Demo, browser: Browser) -> None:
    """SIGTERM with an IDE tab connected and two terminals open: the pod exits 0 within 3 s,
    nothing is SIGKILLed at stopwaitsecs (nginx closes the WebSockets after its
    worker_shutdown_timeout), and every terminal process is gone."""
    page = open_workbench(browser, IDE)  # a fresh tab: Theia was replaced above
    theia = demo.pid("theia")
    for n in (1, 2):
        open_terminal(page, theia, f"echo up > drain{n}.txt; sleep 434{n} &",
                      demo.workspace / f"drain{n}.txt")
    terminal = set(descendants(theia))
    assert len(terminal) >= 4, descendants(theia)
    figure("engine RSS with the real IDE, a tab, two terminals",
           f"{rss_kib(demo.pod.engine_pid) / 1024:.1f} MiB")
    killed_before = len(demo.pod.events("killed"))  # the SIGSTOPped Theia's, if it was
    started = time.monotonic()
    demo.pod.signal(signal.SIGTERM)
    code = demo.pod.wait(30)
    took = time.monotonic() - started
    figure("drain with a tab and two terminals (SIGTERM → exit)", f"{took:.2f} s")
    assert code == 0, demo.pod.tail(30)
    assert took <= 3.0, demo.pod.tail(30)
    killed = demo.pod.events("killed")[killed_before:]
    assert not killed, killed  # the drain SIGKILLed nothing
    wait_for(lambda: not any(pid_alive(p) for p in terminal), 5, "every terminal process gone")
    page.close()
