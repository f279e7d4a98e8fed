"""A service's log file: supervisord's rotation, fed whole lines however large one read is."""

from __future__ import annotations

from pathlib import Path

import pytest

from start.logs import ServiceLog

LINES = [b"line %05d %s\n" % (i, b"y" * (i % 37)) for i in range(3000)]


def _files_oldest_first(directory: Path) -> list[Path]:
    return sorted(directory.glob("svc.log*"),
                  key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)


def test_a_large_write_rotates_after_the_line_that_reaches_maxbytes(tmp_path: Path) -> None:
    """Writes of 40 KB into 1,000-byte files: each file is cut after the line that reaches
    maxbytes, so none runs past it by more than one line, and no line straddles two files."""
    log = ServiceLog(tmp_path / "svc.log", 1000, 200, on_error=pytest.fail)
    data = b"".join(LINES)
    for start in range(0, len(LINES), 1000):
        log.write(b"".join(LINES[start:start + 1000]))
    log.close()
    files = _files_oldest_first(tmp_path)
    assert len(files) > 50
    assert b"".join(path.read_bytes() for path in files) == data
    longest = max(map(len, LINES))
    for path in files:
        content = path.read_bytes()
        assert content.endswith(b"\n")
        assert len(content) < 1000 + longest


def test_without_maxbytes_the_file_only_grows(tmp_path: Path) -> None:
    """stdout_logfile_maxbytes=0: one file, appended to, as under supervisord."""
    (tmp_path / "svc.log").write_bytes(b"from before\n")
    log = ServiceLog(tmp_path / "svc.log", 0, 10, on_error=pytest.fail)
    log.write(b"".join(LINES))
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["svc.log"]
    assert (tmp_path / "svc.log").read_bytes() == b"from before\n" + b"".join(LINES)


def test_a_file_already_past_maxbytes_rotates_at_its_next_line(tmp_path: Path) -> None:
    """A log left over from a previous run, already over the limit, rotates after one line."""
    (tmp_path / "svc.log").write_bytes(b"old\n" * 500)
    log = ServiceLog(tmp_path / "svc.log", 1000, 3, on_error=pytest.fail)
    log.write(b"new 1\nnew 2\n")
    log.close()
    assert (tmp_path / "svc.log.1").read_bytes() == b"old\n" * 500 + b"new 1\n"
    assert (tmp_path / "svc.log").read_bytes() == b"new 2\n"
