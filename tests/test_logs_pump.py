"""The pump on a real child's pipe: a child writing line by line is read in gathered chunks,
every line still lands once, and closing the pump mid-gather leaves nothing scheduled."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from start.logs import Console, Pump, ServiceLog

LINES = 20_000
# One write(2) a line, as fast as it can: a program logging line by line.
LINE_BY_LINE = ("import os\n"
                f"for i in range({LINES}): os.write(1, b'line %06d\\n' % i)\n")


async def _pump_child(tmp_path: Path, code: str) -> tuple[Pump, int]:
    """Run `code` in a child whose stdout is pumped; (the pump, how many chunks it emitted)."""
    loop = asyncio.get_running_loop()
    out = os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT)
    log = ServiceLog(tmp_path / "svc.log", 0, 0, on_error=pytest.fail)
    console = Console(out, fmt="json")
    chunks = 0
    emit = console.child_lines

    def counting(service: str, stream: str, pid: int, chunk: bytes) -> None:
        nonlocal chunks
        chunks += 1
        emit(service, stream, pid, chunk)

    console.child_lines = counting  # type: ignore[method-assign]
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None
    os.set_blocking(child.stdout.fileno(), False)
    pump = Pump(loop, child.stdout.fileno(), service="svc", stream="stdout", pid=child.pid,
                log=log, console=console)
    try:
        await asyncio.wait_for(asyncio.shield(pump.closed), 30)
    finally:
        pump.close()
        child.stdout.close()
        child.wait(10)
        log.close()
        os.close(out)
    return pump, chunks


async def test_a_child_writing_line_by_line_is_read_in_gathered_chunks(tmp_path: Path) -> None:
    """20,000 write(2)s of one line: each lands once in the file and on stdout, in far fewer
    reads than lines (the pump lets a streaming child's output gather between reads)."""
    _, chunks = await _pump_child(tmp_path, LINE_BY_LINE)
    expected = b"".join(b"line %06d\n" % i for i in range(LINES))
    assert (tmp_path / "svc.log").read_bytes() == expected
    objects = (tmp_path / "stdout").read_bytes().split(b"\n")[:-1]
    assert [json.loads(o)["message"] for o in objects] == expected.decode().splitlines()
    # ~10 here (the child writes for ~10 ms); ~1,000 when every wake-up reads what is there.
    assert chunks < LINES / 40, chunks


async def test_closing_mid_gather_leaves_no_reader_or_timer(tmp_path: Path) -> None:
    """The drain deadline closes a pump that waits for its child's output to gather: its
    timer is cancelled and its pipe no longer watched."""
    loop = asyncio.get_running_loop()
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    out = os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT)
    log = ServiceLog(tmp_path / "svc.log", 0, 0, on_error=pytest.fail)
    pump = Pump(loop, read_end, service="svc", stream="stdout", pid=1, log=log,
                console=Console(out, fmt="json"))
    try:
        for line in (b"one\n", b"two\n"):  # two short reads in a row: it starts gathering
            os.write(write_end, line)
            pump._readable()
        gathering = pump._gathering
        assert gathering is not None
        pump.close()
        assert gathering.cancelled() and pump._gathering is None
        assert not loop.remove_reader(read_end)  # not watched any more
        assert (tmp_path / "svc.log").read_bytes() == b"one\ntwo\n"
    finally:
        log.close()
        for fd in (read_end, write_end, out):
            os.close(fd)
