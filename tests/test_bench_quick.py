"""The benchmark harness works: a quick run of a few fast scenarios (not a benchmark)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("spawn", "stop-race", "status")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="the benchmarks need root for PID and network namespaces",
)


def _bench_processes() -> set[int]:
    """Processes whose command line names a bench scratch directory."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"/bench-" in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.timeout(90)
def test_quick_run_measures_every_tool_and_leaves_nothing_running() -> None:
    """`scripts/bench --quick --only …` prints a figure for ours and each anchor, reports no
    scenario as not run, and ends every process and namespace it started."""
    before = _bench_processes()
    done = subprocess.run([str(ROOT / "scripts" / "bench"), "--quick", "--only", *SCENARIOS],
                          cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NOT RUN" not in done.stdout, done.stdout
    out = done.stdout
    assert "start → 5 children spawned" in out
    for tool in ("ours", "supervisord", "tini", "s6", "floor"):
        assert f"\n    {tool} " in out, out
    assert "stop right after start" in out
    assert "`podctl status` wall time" in out
    assert _bench_processes() <= before


@pytest.mark.timeout(90)
def test_a_run_writes_its_report_and_keeps_the_real_ide_section(tmp_path: Path) -> None:
    """`--write FILE` (what `make bench` does): the report is written, and the section the
    end-to-end tests fill is kept as it was."""
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("old report\n\n## The real Eclipse Theia\n\nkept figures\n")
    done = subprocess.run(
        ["unshare", "--net", "--kill-child", "--", "/bin/sh", "-c",
         'ip link set lo up && exec "$0" -m bench.run --quick --only spawn --write "$1"',
         str(ROOT / ".venv" / "bin" / "python"), str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stdout + done.stderr
    text = report.read_text()
    assert "old report" not in text
    assert "start → 5 children spawned" in text
    assert text.endswith("## The real Eclipse Theia\n\nkept figures\n"), text[-300:]
