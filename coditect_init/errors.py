"""The one exception of coditect_init and its exit codes (sysexits.h, so shells and kubelets
can tell a full disk from a bad template without parsing text)."""

from __future__ import annotations

import errno
from pathlib import Path

EX_OK = 0
EX_USAGE = 2  # argparse's own code for a bad command line; kept for every usage mistake
EX_DATAERR = 65  # the home holds the wrong kind of thing: a file where a directory belongs,
# a symlink leading out of the home, a template settings.json that is not a JSON object
EX_NOINPUT = 66  # the template is missing or cannot be read
EX_NOUSER = 67  # --user names nobody this system knows
EX_CANTCREAT = 73  # the home cannot be created or written (permissions, read-only filesystem)
EX_IOERR = 74  # the disk said no: full, over quota, I/O error
EX_TEMPFAIL = 75  # another coditect_init holds the home's lock right now

# errno → (exit code, what the person should do). Anything not listed is an I/O error.
_WRITE_ERRORS: dict[int, tuple[int, str]] = {
    errno.EACCES: (EX_CANTCREAT, "give this user write access to the home or choose another"),
    errno.EPERM: (EX_CANTCREAT, "give this user write access to the home or choose another"),
    errno.EROFS: (EX_CANTCREAT, "the filesystem is read-only: mount the home read-write"),
    errno.ENOSPC: (EX_IOERR, "free some space or grow the volume, then start again"),
    errno.EDQUOT: (EX_IOERR, "raise the quota or free some space, then start again"),
    errno.ELOOP: (EX_DATAERR, "a symlink stands where a directory should be: remove it"),
    errno.ENOTDIR: (EX_DATAERR, "a file stands where a directory should be: move it away"),
    errno.EEXIST: (EX_DATAERR, "a file stands where a directory should be: move it away"),
}


class InitError(Exception):
    """A reason the home cannot be prepared: one line naming the path and what to do."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def write_failed(err: OSError, path: Path, doing: str) -> InitError:
    """Translate an OSError met while writing the home into an InitError."""
    code, advice = _WRITE_ERRORS.get(err.errno or 0, (EX_IOERR, "check the volume, then "
                                                     "start again"))
    return InitError(f"cannot {doing} {path}: {err.strerror or err} — {advice}", code)


def template_failed(err: OSError, path: Path) -> InitError:
    """Translate an OSError met while reading the template into an InitError."""
    if isinstance(err, FileNotFoundError):
        advice = "set --template / CODITECT_TEMPLATE to the image's template directory"
    elif isinstance(err, PermissionError):
        advice = "make the template readable by this user"
    else:
        advice = "check the template's filesystem"
    return InitError(f"cannot read template {path}: {err.strerror or err} — {advice}",
                     EX_NOINPUT)
