"""The stamp of a `once=volume` task: `$CODITECT_HOME/state/tasks/NAME.done`, written after its
success only, so that later boots on the same volume skip it.

The stamp holds one line, `sha256:<hex>`, the digest of what the task runs: its command, its
directory, its user and its environment (`identity`). A changed command (or any of those) no
longer matches and runs again; the digest, never the values, is written, since the
environment may carry a secret. Deleting the file runs the task again on the next boot.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from coditect_init import atomic
from start.catalogue import ServiceSpec

STATE_DIR = ("state", "tasks")  # under $CODITECT_HOME
SUFFIX = ".done"
MODE = 0o644


def identity(spec: ServiceSpec) -> str:
    """What a change of makes the task run again, as the stamp's one line."""
    what = {"argv": list(spec.argv), "directory": spec.directory, "uid": spec.uid,
            "environment": [list(pair) for pair in spec.environment]}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
    return f"sha256:{digest}"


def stamp_path(home: Path, name: str) -> Path:
    return home.joinpath(*STATE_DIR, name + SUFFIX)


def done_before(home: Path, spec: ServiceSpec) -> bool:
    """The task's stamp is there and names the same command: it need not run again."""
    try:
        return stamp_path(home, spec.name).read_text().strip() == identity(spec)
    except (OSError, UnicodeDecodeError):
        return False  # no stamp, or one that cannot be read: run it, it is meant to be safe


def write_stamp(home: Path, spec: ServiceSpec) -> str | None:
    """Record the task's success (atomically: a kill leaves the old stamp or the new one);
    the problem as one line when the volume does not take it."""
    directory = home.joinpath(*STATE_DIR)
    try:
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            atomic.replace(dir_fd, spec.name + SUFFIX, [(identity(spec) + "\n").encode()],
                           mode=MODE)
        finally:
            os.close(dir_fd)
    except OSError as error:
        return f"cannot write {stamp_path(home, spec.name)}: {error.strerror or error}"
    return None
