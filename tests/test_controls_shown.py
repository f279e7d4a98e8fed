"""Control codes from a child are shown, not executed: the console format and `podctl logs`
on a TTY escape C0/C1 controls (but tab and newline); our own colour codes stay."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from healthz.controls import EscapingWriter, escape_controls
from tests.support import ROOT, RunningPod, wait_for, write_catalogue
from tests.test_logs_console import _console_output

HOSTILE = (b"clip \x1b]52;c;ZXZpbA==\x07 clear \x1b[2J csi \xc2\x9b31m cr \r bell \x07 "
           b"del \x7f nul \x00 raw \x9b tab\there \xc3\xa9\n")


def _raw_controls(data: bytes) -> set[int]:
    """The control bytes in `data` a terminal would act on (tab and newline are text)."""
    found = {b for b in data if (b < 0x20 and b not in (9, 10)) or b == 0x7F}
    if "\u009b" in data.decode("utf-8", "replace"):
        found.add(0x9B)
    return found


def test_escape_controls_shows_every_control_and_keeps_text() -> None:
    """Each control becomes its \\xNN escape; tab, newline and é are left alone; an invalid
    byte is shown as its escape too."""
    shown = escape_controls(HOSTILE)
    assert _raw_controls(shown) == set()
    text = shown.decode()
    for escape in ("\\x1b]52", "\\x07", "\\x1b[2J", "\\x9b31m", "\\x0d", "\\x7f", "\\x00"):
        assert escape in text
    assert "tab\there é\n" in text
    assert escape_controls(b"plain ascii\n") == b"plain ascii\n"


def test_escaping_writer_keeps_a_character_split_between_writes() -> None:
    """é written as two single bytes is still é; ESC split from its sequence is escaped."""
    out = _Buffer()
    writer = EscapingWriter(out)  # type: ignore[arg-type]
    for byte in b"\xc3\xa9\x1b[2J\n":
        writer.write(bytes([byte]))
    assert out.data == "é\\x1b[2J\n".encode()


class _Buffer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass


def test_console_format_escapes_the_child_but_keeps_our_colour() -> None:
    """The console format: the child's controls are escaped; each line keeps exactly our two
    colour sequences (start and reset of the prefix)."""
    out = _console_output(True, HOSTILE + b"second line\n")
    lines = out.split(b"\n")[:-1]
    assert len(lines) == 2
    for line in lines:
        assert line.count(b"\x1b") == 2 and line.startswith(b"\x1b[")
        assert _raw_controls(line.replace(b"\x1b", b"")) == set()
    assert b"\\x1b]52" in lines[0]


def test_podctl_logs_on_a_tty_escapes_and_through_a_pipe_passes_bytes(tmp_path: Path) -> None:
    """`podctl logs` to a terminal shows the escapes; to a pipe, the bytes as they are (what
    the child wrote, for tools). The log file read here (`--home`)."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "svc.log").write_bytes(HOSTILE)
    _shown_and_passed([sys.executable, "-m", "healthz.podctl", "--home", str(tmp_path), "logs",
                       "svc"])


def test_podctl_logs_through_the_pod_escapes_on_a_tty_too(tmp_path: Path) -> None:
    """The same when the pod reads the log and streams it over the socket: it passes the bytes,
    podctl escapes them for a terminal."""
    (tmp_path / "hostile").write_bytes(HOSTILE)
    catalogue = write_catalogue(tmp_path / "catalogue", {"svc": {
        "command": f"/bin/sh -c 'cat {tmp_path / 'hostile'}; exec sleep 120'",
        "startsecs": "0"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("health_listening", timeout=20)
        log = tmp_path / "home" / "logs" / "svc.log"
        wait_for(lambda: log.exists() and log.read_bytes() == HOSTILE, 10, "the child's log")
        _shown_and_passed([sys.executable, "-m", "healthz.podctl", "--socket",
                           str(pod.run_dir / "podctl.sock"), "logs", "svc"])
    finally:
        pod.stop()


def _shown_and_passed(command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    piped = subprocess.run(command, capture_output=True, timeout=30, env=env, cwd=ROOT)
    assert piped.returncode == 0 and piped.stdout == HOSTILE, piped.stderr

    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(command, stdout=terminal, stderr=subprocess.PIPE, env=env,
                                cwd=ROOT)
        os.close(terminal)
        terminal = -1
        seen = b""

        def read_all() -> bool:
            nonlocal seen
            if not select.select([controller], [], [], 0.1)[0]:
                return False  # nothing yet: wait_for's deadline bounds the wait
            try:
                part = os.read(controller, 65536)
            except OSError:  # EIO: the process closed the terminal
                return True
            seen += part
            return not part

        wait_for(read_all, 30, "podctl's output on the terminal")
        assert proc.wait(30) == 0
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    text = seen.replace(b"\r\n", b"\n")  # the terminal's own newline translation
    assert _raw_controls(text) == set(), text
    assert b"\\x1b]52;c;ZXZpbA==\\x07" in text and "é".encode() in text


@pytest.mark.parametrize("chunk", [b"\x1b[31m", b"\r", b"\x00"])
def test_console_format_never_passes_a_lone_control(chunk: bytes) -> None:
    """A line that is only a control code shows as its escape."""
    out = _console_output(True, chunk + b"\n")
    assert _raw_controls(out.replace(b"\x1b", b"")) == set()
    assert out.count(b"\x1b") == 2
