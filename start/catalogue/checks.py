"""Checks across services, once every [program:x] is built: names, `after`, probe ports.

`after` may name a service (a process), a program (all of its processes: with `numprocs` that is
every `web_00`, `web_01`, …) or a group (every process of its programs). It is resolved here to
service names, so the engine only ever sees those.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

from healthz.spelling import did_you_mean
from start.catalogue.files import Place
from start.catalogue.spec import ServiceSpec


class Reporter(Protocol):
    def place(self, section: str, key: str | None = None) -> Place: ...

    def problem(self, place: Place, message: str) -> None: ...


def check_services(services: list[ServiceSpec], programs: list[str], health: list[str],
                   groups: Mapping[str, str], report: Reporter) -> list[ServiceSpec]:
    """Report what is wrong between services; return them with `after` resolved."""
    by_name: dict[str, ServiceSpec] = {}
    for service in services:
        first = by_name.setdefault(service.name, service)
        if first is not service:
            report.problem(report.place(f"program:{service.program}", "process_name"),
                           f"{service.name!r} is also a process of [program:{first.program}] "
                           f"({_at(report.place(f'program:{first.program}'))}); "
                           "service names must be unique")
    for name in health:
        if name not in programs:
            owner = by_name.get(name)
            hint = (f"; [health:{owner.program}] applies to every process of "
                    f"[program:{owner.program}]" if owner else
                    did_you_mean(name, programs, lambda p: f"[program:{p}]"))
            report.problem(report.place(f"health:{name}"), f"names no [program:{name}]{hint}")

    members: dict[str, list[str]] = {program: [] for program in programs}
    for service in services:  # a task is a program of one process here
        members.setdefault(service.program, []).append(service.name)
    group_members: dict[str, list[str]] = {}
    for program, group in groups.items():
        if group != program:
            group_members.setdefault(group, []).extend(members.get(program, []))

    resolved: list[ServiceSpec] = []
    for service in services:
        after: list[str] = []
        for name in service.after:
            if name in by_name:
                after.append(name)
            elif name in members or name in group_members:
                after.extend(members.get(name) or group_members.get(name, []))
            else:
                known = [*by_name, *members, *group_members]
                report.problem(report.place(_after_section(service), "after"),
                               f"no service, program or group named {name!r}"
                               + did_you_mean(name, known))
        resolved.append(replace(service, health=replace(
            service.health, after=tuple(dict.fromkeys(after)))))

    graph = {s.name: s.after for s in resolved}
    cycle = find_cycle(graph)
    if cycle:
        first = by_name[cycle[0]]
        report.problem(report.place(_after_section(first), "after"),
                       "dependency cycle " + " -> ".join(cycle))
    _check_ports(resolved, report)
    return resolved


def _after_section(service: ServiceSpec) -> str:
    """Where a service's `after` is written: its [health:x], or a task's own section."""
    return f"task:{service.name}" if service.task is not None else f"health:{service.program}"


def _check_ports(services: list[ServiceSpec], report: Reporter) -> None:
    claimed: dict[int, tuple[ServiceSpec, str]] = {}
    for service in services:
        for key in ("ready", "live"):
            port = getattr(service.health, key).loopback_port
            if port is None:
                continue
            owner, owner_key = claimed.setdefault(port, (service, key))
            if owner.name == service.name:
                continue
            hint = (f"; put %(process_num)s in the port of [health:{service.program}]"
                    if owner.program == service.program else "")
            first = report.place(f"health:{owner.program}", owner_key)
            report.problem(report.place(f"health:{service.program}", key),
                           f"{service.name!r} and {owner.name!r} both probe loopback port "
                           f"{port} ([health:{owner.program}] {owner_key} at {_at(first)}); "
                           f"two services cannot listen on one port{hint}")


def _at(place: Place) -> str:
    return f"{place.file}:{place.line}" if place.line else place.file


def find_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A cycle in `after` as a closed path (a -> b -> a), or None. Iterative: a chain of a
    thousand services must not exhaust the interpreter's stack."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path = [root]
        on_path = {root}
        pending = [iter(graph[root])]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                pending.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            if nxt not in graph or nxt in done:
                continue
            if nxt in on_path:
                return [*path[path.index(nxt):], nxt]
            path.append(nxt)
            on_path.add(nxt)
            pending.append(iter(graph[nxt]))
    return None


def resolve(program: str, path: str, directory: str | None = None) -> str | None:
    """The executable a command's first word names, as the spawn will find it, or None."""
    if "/" in program:
        full = os.path.join(directory or "", program)
        return full if os.path.isfile(full) and os.access(full, os.X_OK) else None
    return shutil.which(program, path=path or None)


def liveness_warnings(services: list[ServiceSpec]) -> list[str]:
    """What `--check` (and so `podctl doctor`) warns about, one line per service: a `tcp://`
    liveness probe, which passes for a hung process."""
    return [f"[health:{s.program}] live={s.health.live}: a TCP handshake succeeds for a "
            "stopped or hung process (the kernel completes it), so this probe never sees a "
            "hang; probe what the service answers: http://, ws:// or exec:"
            for s in services if s.health.live.kind == "tcp"]
