"""The chaos soak (docs/SOAK.md), 60 seconds of it: the demo pod as PID 1 of its own
PID namespace, as an unprivileged user on a read-only root filesystem, while its children are
SIGKILLed, SIGTERMed, stopped and continued, crash-looped and made to flood stdout. Every
property the soak measures is asserted, each with what was measured."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soak import report
from tests.support import ROOT, unmeasured

DURATION = 60  # seconds of faults; boot, warm-up checks and the drain add about 15


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("unshare", "setpriv", "nginx")),
    reason="the soak needs root (namespaces, mounts, another user), unshare, setpriv, nginx")
@pytest.mark.timeout(DURATION + 180)
def test_soak_as_pid1_unprivileged_read_only(tmp_path: Path) -> None:
    """Every property of the soak holds after 60 s of random faults."""
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "soak", "--duration", str(DURATION), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=DURATION + 170, check=False,
        env=unmeasured())  # the pod's root is read-only: nowhere to save coverage data
    assert out.exists(), f"no report (exit {done.returncode}):\n{done.stderr[-3000:]}"
    found = json.loads(out.read_text())
    failed = {name: measured for name, (held, measured) in report.verdicts(found).items()
              if not held}
    assert not failed and "error" not in found, (
        f"{done.stdout}\n{found.get('error', '')}\n{done.stderr[-2000:]}")
    assert done.returncode == 0
    assert found["pid1_uid"] != 0 and found["pid1_is_pid_1"]
    kinds = {fault["kind"] for fault in found["faults"]}
    assert kinds >= {"kill-9", "sigterm", "stop-cont", "flood"}, kinds
