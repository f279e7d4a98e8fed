"""The run directory's failure message (start/mounts.py), for a user who cannot write there:
the socket, the directory, its owner and mode, and the mounts that fix it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="switching to an unprivileged user needs root and setpriv")


def problem_as_nobody(run_dir: Path) -> str:
    """run_dir_problem(run_dir) as computed by uid 65534 (root may write anywhere)."""
    code = ("import sys; from pathlib import Path; from start.mounts import run_dir_problem; "
            "print(run_dir_problem(Path(sys.argv[1])))")
    result = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", code, str(run_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    return result.stdout.strip()


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A scratch directory uid 65534 can reach (pytest's own are root's, mode 0700)."""
    for parent in (ROOT, *ROOT.parents):
        if parent.stat().st_mode & 0o005 != 0o005:
            pytest.skip(f"{parent} is closed to other users: the package cannot be imported")
    directory = Path(tempfile.mkdtemp(prefix="coditect-mounts-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def test_root_owned_directory_is_named_with_owner_mode_and_remedy(open_tmp: Path) -> None:
    """A root-owned 0755 run directory (an engine's plain tmpfs) is reported with the socket,
    its owner and mode, and the mount for podman, docker and Kubernetes."""
    run_dir = open_tmp / "run"
    run_dir.mkdir(mode=0o755)
    run_dir.chmod(0o755)
    line = problem_as_nobody(run_dir)
    assert line.startswith(f"cannot create the control socket {run_dir}/podctl.sock: ")
    assert f"{run_dir} is owned by uid 0 (root), gid 0, mode 0755" in line
    assert f"not writable by uid {NOBODY}" in line
    assert f"podman: --tmpfs {run_dir}:U,mode=0700" in line
    assert f"docker: --tmpfs {run_dir}:uid={NOBODY},gid={NOBODY},mode=0700" in line
    assert "Kubernetes: an emptyDir volume" in line


def test_missing_directory_that_cannot_be_made_names_its_parent(open_tmp: Path) -> None:
    """A run directory that does not exist under a parent the user cannot write names the
    parent's owner and mode."""
    line = problem_as_nobody(open_tmp / "run")
    assert line.startswith(f"cannot create the run directory {open_tmp}/run for the control "
                           f"socket {open_tmp}/run/podctl.sock: Permission denied; ")
    assert f"{open_tmp} is owned by uid 0 (root)" in line


def test_writable_directory_is_no_problem(open_tmp: Path) -> None:
    """A directory the user owns passes."""
    run_dir = open_tmp / "run"
    run_dir.mkdir()
    os.chown(run_dir, NOBODY, NOBODY)
    assert problem_as_nobody(run_dir) == "None"
