"""PID 1's own file-descriptor limit: raised for itself, never for its children.

Every connection to the public health port costs PID 1 a descriptor, and so does every spawn
(pipes), probe (a socket) and log file. A container usually starts with a soft limit of 1024
under a much higher hard limit, so PID 1 raises its soft limit to the hard one. Its children
keep the limit the pod was given: programs built on `select()` misbehave with descriptors
above 1024, and a developer's tools should see the container's limit, not ours.
"""

from __future__ import annotations

import functools
import resource
from collections.abc import Callable

# Where the hard limit is unlimited, this is as far as we go (the kernel's nr_open default).
UNLIMITED_CEILING = 1 << 20

# The limit the pod was given, once we have raised ours; None while ours is the given one.
# Process-wide state, like the limit itself.
_given: tuple[int, int] | None = None


def raise_own_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    global _given
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft  # e.g. nr_open below the hard limit: keep what we have
        if _given is None:
            _given = (soft, hard)
        return target
    return soft if soft != resource.RLIM_INFINITY else UNLIMITED_CEILING


def restore_in_child() -> Callable[[], None] | None:
    """A pre-exec step that gives a child the pod's original limit, or None when ours is it.

    None keeps subprocess on its fast vfork path (the boot's first spawns come before the
    raise); the step itself is one C call between fork and exec.
    """
    if _given is None:
        return None
    return functools.partial(resource.setrlimit, resource.RLIMIT_NOFILE, _given)

