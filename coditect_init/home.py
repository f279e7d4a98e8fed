"""prepare(): bring a home up to its template, in three phases.

Look (read only, may raise), check (room and permissions, may raise), write (atomic steps).
Nearly every way to fail therefore fails before the first write. The home is locked with
flock while it is looked at and written, so two runs never interleave.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from . import atomic, checks, plan, seed, users
from .errors import EX_DATAERR, EX_TEMPFAIL, EX_USAGE, InitError, template_failed, write_failed
from .report import Action, Report
from .template import DIR_MODE, load


def prepare(home: Path, template: Path | None, *, user: str | None = None,
            dry_run: bool = False) -> Report:
    """Create or complete the .coditect home from `template` (None: the bare layout).

    Raises InitError (with `exit_code`) and then has written nothing, or at most complete
    files that the next run keeps.
    """
    owner = users.resolve(user)
    template_real = _resolve_template(template)
    home_real = _resolve_home(home, template_real)
    wanted = load(template_real)
    now = datetime.now(UTC)
    if dry_run:
        looked = plan.make(home_real, wanted, owner, now)
        stale = [f"{home_real / rel} was left by an interrupted run and would be removed"
                 for rel in looked.leftovers]
        return Report(home_real, True, list(looked.actions),
                      [*wanted.warnings, *looked.warnings, *stale])
    created: list[Action] = []
    if not home_real.exists():
        # Refuse a plan that cannot succeed before creating even the home; the real look
        # happens below, under the lock, once the home exists to be locked.
        looked = plan.make(home_real, wanted, owner, now)
        checks.writable(looked)
        checks.space(looked)
        _create_home(home_real, owner)
        created.append(Action("created", "."))
    with _locked(home_real) as home_fd:
        looked = plan.make(home_real, wanted, owner, now)
        checks.writable(looked)
        checks.space(looked)
        done = seed.apply(looked, home_fd)
    return Report(home_real, False, [*created, *looked.actions],
                  [*wanted.warnings, *looked.warnings, *done])


def _resolve_template(template: Path | None) -> Path | None:
    if template is None:
        return None
    real = Path(os.path.realpath(template))
    if not real.is_dir():
        raise template_failed(NotADirectoryError(20, "Not a directory") if real.exists()
                              else FileNotFoundError(2, "No such file or directory"), template)
    return real


def _resolve_home(home: Path, template: Path | None) -> Path:
    """The home with symlinks resolved: the path given is the operator's and trusted; only
    what lies inside the home is checked."""
    real = Path(os.path.realpath(home))
    try:
        if not stat.S_ISDIR(os.stat(real).st_mode):
            raise InitError(f"home {home} is not a directory — move it away or choose "
                            "another home", EX_DATAERR)
    except FileNotFoundError:
        pass  # made later, with its missing parents
    except NotADirectoryError:
        raise InitError(f"home {home} lies under a file, not a directory — move that file "
                        "away or choose another home", EX_DATAERR) from None
    except OSError as err:
        raise write_failed(err, real, "read") from None
    if template is not None and (real == template or real.is_relative_to(template)
                                 or template.is_relative_to(real)):
        raise InitError(f"home {home} and template {template} overlap — keep them apart",
                        EX_USAGE)
    return real


def _create_home(home: Path, owner: atomic.Owner | None) -> None:
    try:
        os.makedirs(home.parent, exist_ok=True)
        parent_fd = os.open(home.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            atomic.make_dir(parent_fd, home.name, mode=DIR_MODE, owner=owner)
        finally:
            os.close(parent_fd)
    except OSError as err:
        raise write_failed(err, home, "create") from None


@contextmanager
def _locked(home: Path) -> Iterator[int]:
    try:
        fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise write_failed(err, home, "open") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InitError(f"another coditect_init is preparing {home} — wait for it to "
                            "finish, then start again", EX_TEMPFAIL) from None
        yield fd
    finally:
        os.close(fd)
