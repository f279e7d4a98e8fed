"""What the demo's stand-in services share: arguments, a slow start, quiet serving, clean TERM.

Each stand-in speaks the protocol of one private binary of the pod well enough for the
supervisor's probes and nginx's routes, and nothing more. Imported by the scripts beside it
(Python puts a script's own directory first on sys.path).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

# Open connections (codi2's WebSockets) are closed by on_shutdown handlers; this bounds the
# wait for anything else, so TERM always ends the process well within a second.
SHUTDOWN_TIMEOUT = 0.5


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
