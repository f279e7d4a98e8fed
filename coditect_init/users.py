"""--user: whom new entries belong to."""

from __future__ import annotations

import os
import pwd

from .atomic import Owner
from .errors import EX_NOUSER, EX_USAGE, InitError


def resolve(user: str | None) -> Owner | None:
    """The owner for a user name or numeric uid; None keeps the files ours."""
    if user is None:
        return None
    try:
        entry = pwd.getpwnam(user)
        owner = Owner(entry.pw_uid, entry.pw_gid)
    except KeyError:
        if not (user.isascii() and user.isdecimal()):  # int() takes a full-width 1000 too
            raise InitError(f"unknown user {user!r} — create it or give a numeric uid",
                            EX_NOUSER) from None
        uid = int(user)
        try:
            owner = Owner(uid, pwd.getpwuid(uid).pw_gid)
        except KeyError:
            owner = Owner(uid, uid)  # an image often runs uids it has no passwd entry for
    if os.geteuid() != 0 and owner.uid != os.geteuid():
        raise InitError(f"only root can give files to user {user!r} — run as root or as "
                        "that user, or leave out --user", EX_USAGE)
    return owner
