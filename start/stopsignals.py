"""Stop and reload signals kept from `coditect-start`'s first line until the engine's handlers.

PID 1 of a PID namespace never sees a signal whose action is the default one: the kernel drops
it when it is sent, not when it would be delivered. So until the engine's own handlers are in
place (start.engine), a handler of ours records what arrives and the engine acts on it then.

`start.entry` installs it before anything else is imported; what it cannot cover is Python's
own start-up (~20-50 ms, before any line of ours runs). A signal *blocked* when it is sent is
never dropped, only held pending: so a launcher that execs `coditect-start` with these signals
blocked loses none, even then, and the engine unblocks them once this handler is in place.
Imports nothing but `signal`: it runs before the rest of the engine is imported.
"""

from __future__ import annotations

import signal
from types import FrameType

KEPT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_arrived: list[int] = []


def keep_signals() -> None:
    """Record stop and reload signals until the engine installs its own handlers; a signal
    held pending since before the exec is recorded at the unblock."""
    for signum in KEPT_SIGNALS:
        signal.signal(signum, _keep)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, KEPT_SIGNALS)


def _keep(signum: int, _frame: FrameType | None) -> None:
    _arrived.append(signum)


def kept_signals() -> list[int]:
    """The signals that arrived before the engine's handlers, in order; forgotten once read."""
    arrived = list(_arrived)
    _arrived.clear()
    return arrived


def release_signals() -> None:
    """Back to Python's own handling (`--check`, a usage error): what was kept is raised again
    the ordinary way, so a Ctrl-C during a check still interrupts it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for quiet in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(quiet, signal.SIG_DFL)
    for signum in kept_signals():
        signal.raise_signal(signum)
