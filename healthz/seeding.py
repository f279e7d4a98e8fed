"""The pod's own seeding of `$CODITECT_HOME`, shown as the first task of `podctl status`.

PID 1 seeds the home before anything else starts (start.early, start.homecheck), in-process
and before the event loop exists, so it is no catalogue task with a process and a log; but a
person reading the status should see it like everything else the boot ran. It is the one task
that degrades instead of failing its dependents: a full or read-only volume still starts the
services (their logs then reach stdout only), so it is never critical.
"""

from __future__ import annotations

from healthz.model import ServiceSnapshot, State

NAME = "coditect-home"


def seeding_snapshot(home_problems: tuple[str, ...]) -> ServiceSnapshot:
    """The seeding as a finished task: ready when the home was prepared, otherwise degraded,
    with its problems as the reason (control socket only, as every reason)."""
    degraded = bool(home_problems)
    return ServiceSnapshot(
        name=NAME, state=State.EXITED, critical=False, ready=not degraded, live=True, pid=None,
        started_at=None, restarts=0, last_exit="degraded" if degraded else "seeded",
        reason="; ".join(home_problems), task=True)
