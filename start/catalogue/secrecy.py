"""Which service is given which secret: `[health:NAME] secrets=`, checked across the catalogue.

A variable named in any service's `secrets=` is a secret for the whole pod. Its value reaches a
process only through the environment of a service that names it (and that service's exec
probes): every other service has it withheld (`ServiceSpec.withheld`, applied by
`start.childenv`). So it may not be expanded with `%(ENV_X)s` anywhere else: in a command or a
probe it would be on a command line, which every process can read in /proc/PID/cmdline; in
another service's `environment=` or `[supervisord] environment` it would reach that service
under another name. And a service that names it in `requires_env=` without `secrets=` would
wait for a variable it is never given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from start.catalogue.checks import Reporter
from start.catalogue.spec import ServiceSpec

_EXPANSION = re.compile(r"%\(ENV_([A-Za-z_][A-Za-z0-9_]*)\)")
_ON_A_COMMAND_LINE = ("command", "ready", "live")


class RawSections(Protocol):
    """What this needs of supervisor's parser: each section's keys, unexpanded."""

    def sections(self) -> list[str]: ...

    def items(self, section: str) -> Iterable[tuple[str, str]]: ...


def check_secrets(services: list[ServiceSpec], parser: RawSections,
                  cut: set[tuple[str, str]], report: Reporter) -> list[ServiceSpec]:
    """Report every place a secret would leak; return the services with `withheld` set."""
    owners: dict[str, str] = {}  # secret -> the first program that names it
    named: dict[str, frozenset[str]] = {}  # program -> the secrets it names
    for service in services:
        named[service.program] = frozenset(service.health.secrets)
        for secret in service.health.secrets:
            owners.setdefault(secret, service.program)
    if not owners:
        return services
    _check_expansions(parser, cut, owners, named, report)
    for program, requires in {s.program: s.health.requires_env for s in services}.items():
        for variable in requires:
            if variable in owners and variable not in named[program]:
                report.problem(report.place(f"health:{program}", "requires_env"),
                               f"{variable} is a secret ([health:{owners[variable]}] secrets=) "
                               "that this service is not given; add it to this service's "
                               "secrets= or remove it from requires_env")
    secrets = frozenset(owners)
    return [replace(s, withheld=tuple(sorted(secrets - named[s.program]))) for s in services]


def _check_expansions(parser: RawSections, cut: set[tuple[str, str]], owners: dict[str, str],
                      named: dict[str, frozenset[str]], report: Reporter) -> None:
    for section in parser.sections():
        kind, _, name = section.partition(":")
        for key, value in parser.items(section):
            if (section, key) in cut:
                continue
            for variable in dict.fromkeys(_EXPANSION.findall(value)):
                if variable not in owners:
                    continue
                if kind == "program" and key == "environment" and variable in named.get(
                        name, ()):
                    continue  # the one way a secret is meant to travel
                report.problem(report.place(section, key),
                               f"%(ENV_{variable})s: {variable} is a secret ([health:"
                               f"{owners[variable]}] secrets=); {_why(key)}; expand it only "
                               "in the environment= of a service that names it in secrets=")


def _why(key: str) -> str:
    if key in _ON_A_COMMAND_LINE:
        return "here it would be on a command line, which every process reads in /proc/PID/cmdline"
    return "here it would reach a service that does not name it"
