"""What the demo's stand-in services share: arguments, a slow start, quiet serving, clean TERM.

Each stand-in speaks the protocol of one private binary of the pod well enough for the
supervisor's probes and nginx's routes, and nothing more. Imported by the scripts beside it
(Python puts a script's own directory first on sys.path).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import select
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

# Open connections (codi2's WebSockets) are closed by on_shutdown handlers; this bounds the
# wait for anything else, so TERM always ends the process well within a second.
SHUTDOWN_TIMEOUT = 0.5

# The soak (soak/) sets this to a number of seconds: each stand-in then writes a numbered line
# `seq RUN N` that often, so lost or doubled log lines can be counted. RUN is new each run.
SEQ_INTERVAL_ENV = "STANDIN_SEQ_INTERVAL"


class Numbered:
    """The numbered lines of one run: `seq RUN N [padding]`, N from 0 without a gap."""

    def __init__(self) -> None:
        self.run = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.next = 0

    def write(self, count: int = 1, padding: str = "") -> None:
        # Whole lines, at most PIPE_BUF bytes a write: such a pipe write is atomic, so even a
        # SIGKILL never leaves half a line for the supervisor to find.
        chunk: list[str] = []
        size = 0
        for n in range(self.next, self.next + count):
            line = f"seq {self.run} {n}{padding}\n"
            if size + len(line) > select.PIPE_BUF and chunk:
                os.write(1, "".join(chunk).encode())
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
            self.next = n + 1
        if chunk:
            os.write(1, "".join(chunk).encode())

    def end(self) -> None:
        """The run's last line, `seq RUN N end`: a run that ends without it was killed."""
        self.write(1, " end")


def seq_interval() -> float:
    """STANDIN_SEQ_INTERVAL in seconds; 0 when unset (no numbered lines)."""
    return float(os.environ.get(SEQ_INTERVAL_ENV) or 0)


async def tick(numbered: Numbered, interval: float) -> None:
    """Write a numbered line every `interval` seconds until cancelled."""
    while True:
        numbered.write()
        await asyncio.sleep(interval)


def parse_args(
    name: str, default_port: int, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=name, description=f"demo stand-in: {name}")
    # --hostname is Theia's spelling; accepting it lets the production arguments through.
    parser.add_argument("--host", "--hostname", dest="host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument(
        "--start-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long before listening, like a slow-starting service",
    )
    return parser.parse_args(argv)


def run(name: str, app: web.Application, args: argparse.Namespace) -> int:
    """Serve `app` until SIGTERM or SIGINT; the exit code is 0 then, 1 if it cannot listen."""
    return asyncio.run(_serve(name, app, args.host, args.port, args.start_delay))


async def _serve(name: str, app: web.Application, host: str, port: int, delay: float) -> int:
    numbered = Numbered()
    interval = seq_interval()
    ticker = asyncio.create_task(tick(numbered, interval)) if interval > 0 else None
    try:
        return await _listen(name, app, host, port, delay)
    finally:
        if ticker is not None:  # however the run ends short of a SIGKILL, it says so
            ticker.cancel()
            numbered.end()


async def _listen(name: str, app: web.Application, host: str, port: int, delay: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    # A stop during the start delay must end the process at once, as it would a real one.
    if delay > 0:
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return 0
        except TimeoutError:
            pass

    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        print(f"{name}: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        await runner.cleanup()
        return 1
    print(f"{name}: listening on {host}:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()
    return 0
