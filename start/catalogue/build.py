"""Building a catalogue: every [program:x] through supervisor, its [health:x] beside it, then
the checks across services. Imported only when a catalogue is really parsed (a cold boot, a
reload, `--check`): a warm boot starts from `start.catalogue.cache` without it, and without
the `supervisor` library it imports.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from healthz.names import RULE, is_service_name
from healthz.spec import HealthSpec, parse_health_section
from healthz.spelling import did_you_mean
from start.catalogue import program as program_
from start.catalogue import task as task_
from start.catalogue.checks import check_services, resolve
from start.catalogue.files import Place
from start.catalogue.secrecy import check_secrets
from start.catalogue.sources import Sources
from start.catalogue.spec import Catalogue, Provenance, ServiceSpec
from start.errors import ConfigError

MAX_SERVICES = 1000
MAX_PROBLEMS = 200  # past this, the rest is one line: fix these first
IGNORED_SECTIONS = ("unix_http_server", "inet_http_server", "supervisorctl", "rpcinterface:",
                    "ctlplugin:")
KNOWN_KINDS = ("program", "health", "task", "group", "include", "supervisord")
# The pod's own seeding of $CODITECT_HOME, shown as a task (healthz.seeding): no catalogue
# entry may take its name.
RESERVED_NAMES = frozenset({"coditect-home"})
UNSUPPORTED_SECTIONS = {
    "eventlistener:": "is not supported: there is no event protocol here; run the listener "
    "as a [program:NAME], and use [health:NAME] probes or podctl to watch services",
    "fcgi-program:": "is not supported: run the FastCGI server as a [program:NAME] that "
    "opens its own socket, behind nginx",
}


def build(
    location: Path,
    *,
    overlay: Path | None = None,
    environ: Mapping[str, str] | None = None,
    check_executables: bool = True,
) -> Catalogue:
    """`start.catalogue.load`'s work: read, build, check; ConfigError lists every
    problem found."""
    reader = Sources(dict(os.environ if environ is None else environ))
    try:
        main = location / "supervisord.conf" if location.is_dir() else location
    except OSError as error:
        raise ConfigError([f"{location}: cannot read the catalogue: {error.strerror}"]) from None
    reader.read_main(main)
    if overlay is not None:
        reader.apply_overlay(overlay)
    services = _Builder(reader).build_services(check_executables=check_executables)
    if not services and reader.files and not reader.problems:
        _no_service(reader, main)
    problems = reader.ordered(reader.problems)
    if problems:
        if len(problems) > MAX_PROBLEMS:
            rest = len(problems) - MAX_PROBLEMS
            problems = [*problems[:MAX_PROBLEMS], f"… and {rest} more problems"]
        raise ConfigError(problems)
    return Catalogue(
        services=tuple(sorted(services, key=lambda s: (s.priority, s.name))),
        notes=tuple(reader.ordered(reader.notes)),
        files=tuple(reader.files),
        provenance=Provenance(stamps=tuple(reader.stamps), globs=tuple(reader.globs)),
    )


def _no_service(reader: Sources, main: Path) -> None:
    """A pod with nothing to run is a mistake (an include that matched nothing, a catalogue
    directory that is not the one meant), not a pod: say where the services were looked for.
    Told only when nothing else is wrong: a problem found already is the likelier cause."""
    if any(s.startswith("program:") for s in reader.parser.sections()):
        where = "every [program:NAME] has numprocs = 0"
    elif not reader.parser.has_section("include"):
        where = f"no [program:NAME] in {main}, and no [include]"
    elif not reader.globs:
        where = f"no [program:NAME] in {main}, and its [include] lists no files"
    else:
        looked = "; ".join(f"{pattern} matched {_files(len(matches))}"
                           for pattern, matches in reader.globs)
        where = f"no [program:NAME] in {main} or the files its [include] names: {looked}"
    reader.problem(Place(str(main)), f"defines no service ({where}); add a [program:NAME], "
                   "or point --catalogue / CODITECT_CATALOGUE at the catalogue meant")


def _files(count: int) -> str:
    return "nothing" if count == 0 else "1 file" if count == 1 else f"{count} files"


def _kind_hint(kind: str, rest: str) -> str:
    """`; did you mean [program:x]?` for a section whose kind is nearly a known one."""
    return did_you_mean(kind, KNOWN_KINDS, lambda close: f"[{close}{rest}]")


class _Builder:
    """Services from the merged sections: each [program:x] through supervisor, its
    [health:x] beside it, then the checks across services."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.parser = sources.parser
        self.environ = sources.environ
        self.here = sources.here
        self.cut = sources.cut
        self.place = sources.place
        self.problem = sources.problem
        self.note = sources.note
        self.pod_environment: dict[str, str] = {}  # [supervisord] environment

    def build_services(self, *, check_executables: bool) -> list[ServiceSpec]:
        environ_expansions = self._supervisord_environment()
        groups = self._groups()
        health: list[str] = []
        programs: list[str] = []
        tasks: list[str] = []
        for section in self.parser.sections():
            where = self.place(section)
            kind, colon, name = section.partition(":")
            if colon and not name and kind in ("program", "health", "task", "group"):
                self.problem(where, f"has no name; write [{kind}:NAME]")
            elif kind == "program" and colon:
                programs.append(name)
            elif kind == "health" and colon:
                health.append(name)
            elif kind == "task" and colon:
                tasks.append(name)
            elif section in ("supervisord", "include") or (kind == "group" and colon):
                continue
            elif section.startswith(IGNORED_SECTIONS):
                self.note(where, "has no meaning here and is ignored (podctl speaks to the "
                          "pod's own socket)")
            elif message := next((m for p, m in UNSUPPORTED_SECTIONS.items()
                                  if section.startswith(p)), None):
                self.problem(where, message)
            else:
                hint = _kind_hint(kind, colon + name)
                self.problem(where, "unknown section kind; expected [program:NAME], "
                             "[health:NAME], [task:NAME], [group:NAME], [include] or "
                             "[supervisord]" + hint)

        services: list[ServiceSpec] = []
        for name in programs:
            services.extend(self._program(name, groups.get(name, name), environ_expansions,
                                          check_executables))
            if len(services) > MAX_SERVICES:
                self.problem(self.place(f"program:{name}"),
                             f"more than {MAX_SERVICES} services in one pod")
                return []
        for name in health:
            if name not in programs:
                self._health(name, program_.base_names(self.here, name, name,
                                                       environ_expansions))
        for name in tasks:
            spec = self._task(name, programs, environ_expansions, check_executables)
            if spec is not None:
                services.append(spec)
        for spec in services:
            if spec.name in RESERVED_NAMES:
                section = f"task:{spec.name}" if spec.task else f"program:{spec.program}"
                self.problem(self.place(section), f"{spec.name!r} is the pod's own seeding "
                             "of $CODITECT_HOME; choose another name")
        services = check_services(services, programs, health, groups, self.sources)
        return check_secrets(services, self.parser, self.cut, self.sources)

    def _supervisord_environment(self) -> dict[str, str]:
        expansions = dict(self.parser.expansions)
        if not self.parser.has_section("supervisord"):
            return expansions
        where = self.place("supervisord")
        idle: list[str] = []
        for key in self.parser.options("supervisord"):
            if key not in program_.SUPERVISORD_KEYS:
                self.problem(self.place("supervisord", key),
                             f"unknown key{did_you_mean(key, program_.SUPERVISORD_KEYS)}")
            elif key not in ("environment", "nodaemon"):
                idle.append(key)
        if idle:
            self.note(where, f"{', '.join(idle)}: no effect here (the engine runs in the "
                      "foreground and logs to stdout)")
        if ("supervisord", "environment") in self.cut:
            return expansions
        raw = self.parser.get("supervisord", "environment", fallback="")
        try:
            text = program_.expand(raw, {**expansions, "here": self.here})
            if (too_long := program_.value_too_long("environment", text)) is not None:
                raise ValueError(too_long)
            pairs = program_.key_value_pairs(text)
        except ValueError as error:
            self.problem(self.place("supervisord", "environment"), program_.one_line(error))
            return expansions
        self.pod_environment = pairs
        return {**expansions, **{f"ENV_{k}": v for k, v in pairs.items()}}

    def _groups(self) -> dict[str, str]:
        """Program name → its [group:x]'s name (supervisord's `%(group_name)s`)."""
        member: dict[str, str] = {}
        for section in self.parser.sections():
            kind, _, group = section.partition(":")
            if kind != "group" or not group:
                continue
            if self.parser.has_option(section, "priority"):
                self.note(self.place(section, "priority"), "no effect here: order services "
                          "with the programs' priority and [health:NAME] after")
            for key in self.parser.options(section):
                if key not in program_.GROUP_KEYS:
                    self.problem(self.place(section, key),
                                 f"unknown key{did_you_mean(key, program_.GROUP_KEYS)}")
            raw = self.parser.get(section, "programs", fallback="")
            for name in (n.strip() for n in raw.split(",") if n.strip()):
                if not self.parser.has_section(f"program:{name}"):
                    self.problem(self.place(section, "programs"), f"no [program:{name}]")
                elif name in member:
                    self.problem(self.place(section, "programs"),
                                 f"{name} is already in [group:{member[name]}]; a program "
                                 "belongs to one group")
                else:
                    member[name] = group
        return member

    def _program(self, name: str, group: str, environ_expansions: dict[str, str],
                 check_executables: bool) -> list[ServiceSpec]:
        section = f"program:{name}"
        names = program_.base_names(self.here, name, group, environ_expansions)
        skip = {key for (cut_section, key) in self.cut if cut_section == section}
        built = program_.read_program(self.parser, section, group, names, skip,
                                      self.place(section).file)
        for key, message in built.problems:
            self.problem(self.place(section, key), message)
        if built.no_effect:
            self.note(self.place(section), f"{', '.join(built.no_effect)}: accepted for "
                      "supervisord's sake, no effect here (coditect-start --help-catalogue)")
        if not built.configs and not built.problems and not skip:
            self.note(self.place(section, "numprocs"), "0: starts no process")
        if not built.configs:
            self._health(name, names)  # its problems are worth knowing all the same
            return []
        services = []
        for config, process_names in zip(built.configs, built.names, strict=True):
            health = self._health(name, process_names)
            spec = self._service(config, name, health, process_names, check_executables)
            if spec is not None:
                services.append(spec)
        return services

    def _task(self, name: str, programs: list[str], environ_expansions: dict[str, str],
              check_executables: bool) -> ServiceSpec | None:
        section = f"task:{name}"
        if name in programs:
            self.problem(self.place(section), f"[program:{name}] has this name already; a "
                         "task's name must be unique among services and tasks")
            return None
        items = {key: value for key, value in self.parser.items(section)
                 if (section, key) not in self.cut}
        names = program_.base_names(self.here, name, name, environ_expansions)
        built = task_.read_task(name, items, names, self.pod_environment,
                                self.place(section).file)
        for key, message in built.problems:
            self.problem(self.place(section, key), message)
        spec = built.spec
        if spec is None or not check_executables:
            return spec
        path = dict(spec.environment).get("PATH", self.environ.get("PATH", ""))
        if resolve(spec.argv[0], path, spec.directory) is None:
            self.problem(self.place(section, "command"),
                         f"{spec.argv[0]!r} is not an executable file"
                         + ("" if "/" in spec.argv[0] else " on PATH")
                         + "; install it or fix the command")
            return None
        if spec.directory and not os.path.isdir(spec.directory):
            self.problem(self.place(section, "directory"),
                         f"{spec.directory!r} is not a directory")
        return spec

    def _health(self, name: str, names: Mapping[str, object]) -> HealthSpec:
        section = f"health:{name}"
        if not self.parser.has_section(section):
            return HealthSpec.default()
        items: dict[str, str] = {}
        for key, value in self.parser.items(section):
            if (section, key) in self.cut:
                continue
            try:
                items[key] = program_.expand(value, names)
            except ValueError as error:
                self.problem(self.place(section, key), str(error))
        spec, problems = parse_health_section(items)
        for problem in problems:
            self.problem(self.place(section, problem.key), problem.message)
        environment = {**self.environ, **self.pod_environment,
                       **{k[4:]: str(v) for k, v in names.items() if k.startswith("ENV_")}}
        for variable in spec.missing_env(environment):
            self.problem(self.place(section, "requires_env"),
                         f"{variable} is not set; set it in the pod's environment before "
                         "starting")
        return spec

    def _service(self, config: Any, program: str, health: HealthSpec,
                 names: Mapping[str, object], check_executables: bool) -> ServiceSpec | None:
        section = f"program:{program}"
        name = str(config.name)
        if not is_service_name(name):
            self.problem(self.place(section, "process_name" if name != program else None),
                         f"{name!r} cannot name a service: use {RULE}")
            return None
        environment = {**self.pod_environment, **(config.environment or {})}
        try:
            argv = tuple(shlex.split(config.command))
        except ValueError as error:
            self.problem(self.place(section, "command"), f"cannot split it: {error}")
            return None
        if not argv:
            self.problem(self.place(section, "command"), "empty")
            return None
        if check_executables:
            path = environment.get("PATH", self.environ.get("PATH", ""))
            if resolve(argv[0], path, config.directory) is None:
                self.problem(self.place(section, "command"),
                             f"{argv[0]!r} is not an executable file"
                             + ("" if "/" in argv[0] else " on PATH")
                             + "; install it or fix the command")
                return None
            if config.directory and not os.path.isdir(config.directory):
                self.problem(self.place(section, "directory"),
                             f"{config.directory!r} is not a directory")
            for key in ("ready", "live"):
                probe = getattr(health, key)
                if probe.kind == "exec" and resolve(probe.argv[0], self.environ.get(
                        "PATH", "")) is None:
                    self.problem(self.place(f"health:{program}", key),
                                 f"exec: {probe.argv[0]!r} is not an executable file"
                                 + ("" if "/" in probe.argv[0] else " on PATH")
                                 + "; install it or fix the probe")
        return ServiceSpec(
            name=name,
            argv=argv,
            environment=tuple(sorted(environment.items())),
            directory=config.directory,
            uid=config.uid,
            umask=config.umask,
            priority=int(config.priority),
            autostart=bool(config.autostart),
            autorestart=program_.autorestart_word(config),
            startsecs=float(config.startsecs),
            startretries=int(config.startretries),
            exitcodes=tuple(int(c) for c in config.exitcodes),
            stopsignal=int(config.stopsignal),
            stopwaitsecs=float(config.stopwaitsecs),
            redirect_stderr=bool(config.redirect_stderr),
            logfile_maxbytes=int(config.stdout_logfile_maxbytes),
            logfile_backups=int(config.stdout_logfile_backups),
            health=health,
            source=self.place(section).file,
            program=program,
        )
