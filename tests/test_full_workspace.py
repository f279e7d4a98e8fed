"""A full workspace volume: the demo pod on a workspace that is a small tmpfs filled to its last
block (in a private mount namespace), while a developer keeps writing there. The file monitor
and every service keep running, the pod stays ready, and what could still be recorded is."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from bench.wait import holds_for
from tests.demo_support import CORE, running_demo
from tests.support import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="a private mount namespace needs root and unshare")

# Mounted in the pod's own mount namespace, so the machine's mounts never change; `$0` is the
# workspace. The fill stops at ENOSPC, which is the point.
FULL_WORKSPACE = ('mount -t tmpfs -o size=256k,mode=0777 tmpfs "$0" && '
                  '{ head -c 1m /dev/urandom > "$0/fill.bin"; true; } && exec "$@"')


def in_the_pods_view(engine: int, path: Path) -> Path:
    """`path` as the pod sees it: through its mount namespace (/proc/PID/root)."""
    return Path(f"/proc/{engine}/root{path}")


def test_a_full_workspace_keeps_the_pod_ready(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", FULL_WORKSPACE,
               str(workspace)]
    with running_demo("full-workspace-", env={"CODITECT_WORKSPACE": str(workspace)},
                      wrapper=wrapper) as demo:
        demo.pod.wait_event("health_listening", 20)  # its own faces, the control socket too
        demo.wait_running(*CORE, "file-monitor")
        engine = demo.pod.engine_pid
        seen = in_the_pods_view(engine, workspace)
        usage = os.statvfs(seen)
        assert usage.f_bavail == 0, "the workspace is not full"
        pids = {name: demo.pid(name) for name in (*CORE, "file-monitor")}

        # A developer goes on working: a new file (an inode needs no block), a write that fails.
        (seen / "notes.txt").touch()
        with pytest.raises(OSError, match="No space left") as refused:
            (seen / "notes.txt").write_bytes(b"x" * 65536)
        assert refused.value.errno == errno.ENOSPC
        (seen / "src").mkdir()
        (seen / "src" / "empty.py").touch()

        events_log = demo.home / "logs" / "events.log"

        def recorded(name: str) -> bool:
            try:
                lines = events_log.read_text().splitlines()
            except OSError:
                return False
            return any(name in json.loads(line).get("file_path") or "" for line in lines if line)

        def said() -> str:
            logs = demo.home / "logs"
            return "\n".join(f"{name}: {(logs / name).read_text()[-1500:]}"
                             for name in ("events.log", "file-monitor.log")
                             if (logs / name).exists())

        wait_for(lambda: recorded("empty.py"), 20,
                 lambda: f"the file monitor to record src/empty.py\n{said()}")
        holds_for(lambda: demo.answers() and demo.health_get("/livez")[0] == 200, 3.0,
                  "/readyz and /livez 200 on a full workspace", interval=0.2)
        assert {name: demo.pid(name) for name in pids} == pids  # nothing restarted
        assert demo.running(*CORE, "file-monitor")
        assert not demo.pod.events("exited"), demo.pod.tail(30)
        assert "Traceback" not in "".join(demo.pod.raw) + "".join(demo.pod.stderr)
