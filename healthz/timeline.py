"""The boot as a critical chain (`podctl timeline`), as `systemd-analyze critical-chain` draws it.

For each service: when it was first spawned and first ready since the boot (the event feed
remembers both, healthz.eventfeed), what it waited for (`after`) and which of those released it
(the last to be ready). The chain is walked back from the service ready last: each step is the
dependency that held the next one up, so the chain is where a faster boot must come from.

Times are seconds from the boot's origin: the seeding of $CODITECT_HOME (the pod's own first
step, shown as `coditect-home`), the first spawn, or the engine's own start, whichever came
first. A service spawned before the engine was imported is timed by its process's own start
(its `spawned` event is written at adoption, a little later).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from healthz.eventfeed import EventFeed
from healthz.model import PodSnapshot, ServiceSnapshot
from healthz.seeding import NAME as SEEDING


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    after: tuple[str, ...]
    spawned: float | None  # seconds from the origin
    ready: float | None
    took: float | None  # from spawned to ready
    waited_for: str | None  # the dependency ready last, which released it
    critical: bool  # on the slowest path


def _spawned_at(svc: ServiceSnapshot, feed: EventFeed) -> float | None:
    first = feed.first_spawned.get(svc.name)
    if svc.restarts == 0 and svc.started_at is not None:
        return svc.started_at if first is None else min(first, svc.started_at)
    return first


def _released_by(svc: ServiceSnapshot, ready: dict[str, float]) -> str | None:
    known = [name for name in svc.after if name in ready]
    return max(known, key=lambda name: ready[name]) if known else None


def timeline(snap: PodSnapshot, feed: EventFeed) -> dict[str, object]:
    spawned = {s.name: at for s in snap.services if (at := _spawned_at(s, feed)) is not None}
    ready = {s.name: feed.first_ready[s.name] for s in snap.services if s.name in feed.first_ready}
    # The pod's own seeding of $CODITECT_HOME came before every spawn: its first step.
    seeded = [snap.seeded[0]] if snap.seeded is not None else []
    origin = min([snap.booted_at, *spawned.values(), *seeded])
    released = {s.name: _released_by(s, ready) for s in snap.services}
    chain: list[str] = []
    if ready:
        step: str | None = max(ready, key=lambda name: ready[name])
        while step is not None and step not in chain:
            chain.append(step)
            step = released.get(step)
    steps: list[Step] = []
    for svc in snap.services:
        start, done = spawned.get(svc.name), ready.get(svc.name)
        steps.append(Step(
            name=svc.name, after=svc.after,
            spawned=None if start is None else round(start - origin, 4),
            ready=None if done is None else round(done - origin, 4),
            took=None if start is None or done is None else round(max(0.0, done - start), 4),
            waited_for=released[svc.name], critical=svc.name in chain,
        ))
    steps.sort(key=lambda s: (s.spawned is None, s.spawned or 0.0, s.name))
    if snap.seeded is not None:
        began, ended = snap.seeded
        steps.insert(0, Step(name=SEEDING, after=(), spawned=round(began - origin, 4),
                             ready=round(ended - origin, 4), took=round(max(0.0, ended - began), 4),
                             waited_for=None, critical=bool(chain)))
        if chain:
            chain.append(SEEDING)  # walked back from the last ready: the seeding came first
    total = max(ready.values()) - origin if ready else None
    return {
        "origin": origin,
        "ready_after": None if total is None else round(total, 4),
        "critical_chain": list(reversed(chain)),
        "services": [asdict(step) for step in steps],
    }
