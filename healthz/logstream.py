"""`GET /v1/logs/NAME`: a service's log read by the pod and streamed over the control socket.

Log files are 0640 in a 0750 directory, the pod's own; whoever may use the socket may read
them through it, without file permissions and without knowing `CODITECT_HOME`. The bytes are
passed as they are (escaping control codes is the terminal's client's business: podctl on a
TTY). Following uses `healthz.podctl_logs.Follower`, the same lossless walk across rotation as
`podctl logs -f` on a file: the held file is read to its end before the one written after it.

Memory stays bounded whatever is asked: the last N lines are found by counting newlines
backwards and then copied block by block, and every write waits for the client (aiohttp's
flow control), so a slow reader holds the pod's memory to a few blocks, never the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import BinaryIO

from aiohttp import web

from healthz.podctl_logs import Follower, open_regular

BLOCK = 64 * 1024
MAX_LINES = 10_000_000  # a line count past this is a slip; `lines` bigger is refused


def tail_start(log: BinaryIO, end: int, count: int) -> tuple[int, int]:
    """Where the last `count` lines before offset `end` begin, and how many lines there are
    from there (fewer when the file has fewer; an unterminated last line counts as one)."""
    if count <= 0 or end <= 0:
        return end, 0
    log.seek(end - 1)
    wanted = count + (1 if log.read(1) == b"\n" else 0)  # the last newline ends a line
    seen = 0
    pos = end
    while pos > 0:
        step = min(BLOCK, pos)
        pos -= step
        log.seek(pos)
        block = log.read(step)
        at = len(block)
        while seen < wanted:
            at = block.rfind(b"\n", 0, at)
            if at < 0:
                break
            seen += 1
            if seen == wanted:
                return pos + at + 1, count
    lines = seen - (wanted - count) + 1  # the first line has no newline before it
    return 0, max(0, min(count, lines))


class LogStream:
    """One answer to GET /v1/logs/NAME: the last lines, then (follow) what comes, until the
    client leaves or `closing` is set (the listener shuts down)."""

    def __init__(self, path: str, closing: asyncio.Event,
                 on_gap: Callable[[str], None]) -> None:
        self.path = path
        self.closing = closing
        self.on_gap = on_gap

    async def serve(self, request: web.Request, lines: int, follow: bool) -> web.StreamResponse:
        log = open_regular(self.path)  # OSError for the route to turn into an answer
        try:
            end = os.fstat(log.fileno()).st_size
            start, found = await asyncio.to_thread(tail_start, log, end, lines)
            response = web.StreamResponse(headers={
                "Content-Type": "application/octet-stream", "Cache-Control": "no-store"})
            await response.prepare(request)
            try:
                if found < lines:
                    await self._older(response, lines - found)
                await _copy(log, start, end, response)
                if follow:
                    await self._follow(request, response, log)
                await response.write_eof()
            except ConnectionError:
                pass  # the client left: nothing more to say to it
            return response
        finally:
            log.close()

    async def _older(self, response: web.StreamResponse, count: int) -> None:
        """The end of `NAME.log.1` when the current file, freshly rotated, has too few lines."""
        try:
            older = open_regular(self.path + ".1")
        except OSError:
            return
        with older:
            end = os.fstat(older.fileno()).st_size
            start, _ = await asyncio.to_thread(tail_start, older, end, count)
            last = await _copy(older, start, end, response)
        if last and not last.endswith(b"\n"):
            await response.write(b"\n")

    async def _follow(self, request: web.Request, response: web.StreamResponse,
                      log: BinaryIO) -> None:
        follower = Follower(self.path, log, on_gap=self.on_gap)
        try:
            while not self.closing.is_set():
                data, pause = follower.look()
                if data:
                    await response.write(data)
                    await asyncio.sleep(0)  # a fast reader of a long log: let the loop breathe
                if pause:
                    if request.transport is None or request.transport.is_closing():
                        return  # the client left while the file was quiet
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.closing.wait(), pause)
        finally:
            if follower.log is not log:
                follower.close()  # a successor it opened; `log` is the caller's to close


async def _copy(log: BinaryIO, start: int, end: int, response: web.StreamResponse) -> bytes:
    """Bytes [start, end) of `log` to the client, a block at a time; the last block sent."""
    log.seek(start)
    last = b""
    while start < end:
        block = log.read(min(BLOCK, end - start))
        if not block:
            break
        start += len(block)
        await response.write(block)
        await asyncio.sleep(0)  # between blocks, the pod's probes and pumps come first
        last = block
    return last
