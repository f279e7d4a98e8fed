"""What a container that cannot write where the pod must is told: the file that could not be
made, the directory, its owner and mode, and the mount that fixes it. An engine's obvious
`--tmpfs DIR` is root's, mode 0755; a read-only root hides what the image made writable."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

SOCKET_NAME = "podctl.sock"


def _owner(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def describe(directory: Path) -> str:
    """`/run/coditect is owned by uid 0 (root), gid 0, mode 0755` (and read-only if so)."""
    st = directory.stat()
    mode = st.st_mode & 0o7777
    text = f"{directory} is owned by {_owner(st.st_uid)}, gid {st.st_gid}, mode {mode:04o}"
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        text += " on a read-only filesystem"
    return text


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def run_dir_problem(run_dir: Path) -> str | None:
    """None when the control socket can be created in `run_dir` (made if missing); else one
    line saying what failed and what to mount."""
    socket = run_dir / SOCKET_NAME
    uid, gid = os.geteuid(), os.getegid()
    # podman (4.3) refuses uid= on a tmpfs and chowns it with U; docker takes uid= and gid=.
    remedy = (f"mount a directory uid {uid} can write at {run_dir} (podman: --tmpfs "
              f"{run_dir}:U,mode=0700; docker: --tmpfs {run_dir}:uid={uid},gid={gid},mode=0700; "
              "Kubernetes: an emptyDir volume) or set CODITECT_RUN / --run-dir")
    try:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
        return (f"cannot create the run directory {run_dir} for the control socket {socket}: "
                f"{error.strerror}; {describe(existing)}; {remedy}")
    if not _writable(run_dir):
        return (f"cannot create the control socket {socket}: {describe(run_dir)}, not writable "
                f"by uid {uid}; {remedy}")
    return None
