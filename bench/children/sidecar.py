#!/usr/bin/env python3
"""The health process a supervisord pod would need (beside it, not in it): aiohttp, with
`/readyz` answered by an exec probe, `supervisorctl status` (exit 0: every program RUNNING),
and optionally HTTP probes of the services every `--interval` seconds, like ours.

    sidecar.py --port PORT --supervisorctl-config FILE [--probe URL ...] [--interval 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import ClientSession, ClientTimeout, web


async def readyz(request: web.Request) -> web.Response:
    process = await asyncio.create_subprocess_exec(
        request.app["supervisorctl"], "-c", request.app["config"], "status",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    code = await process.wait()
    return web.Response(status=200 if code == 0 else 503, text="ok" if code == 0 else "not ok")


async def probe_forever(app: web.Application) -> None:
    async with ClientSession(timeout=ClientTimeout(total=2)) as session:
        while True:
            for url in app["probes"]:
                try:
                    async with session.get(url) as response:
                        await response.read()
                except (TimeoutError, OSError):
                    pass
            await asyncio.sleep(app["interval"])


async def start_probes(app: web.Application) -> None:
    if app["probes"]:
        app["probing"] = asyncio.create_task(probe_forever(app))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--supervisorctl-config", required=True)
    parser.add_argument("--supervisorctl", default="supervisorctl")
    parser.add_argument("--probe", action="append", default=[])
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()
    app = web.Application()
    app["config"], app["supervisorctl"] = args.supervisorctl_config, args.supervisorctl
    app["probes"], app["interval"] = args.probe, args.interval
    app.router.add_get("/readyz", readyz)
    app.on_startup.append(start_probes)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
