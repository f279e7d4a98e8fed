"""The catalogue: supervisord's dialect, read by the `supervisor` library, into frozen specs.

`[program:x]` sections are turned into `ProcessConfig` objects by supervisor's own
`ServerOptions.processes_from_section`, so every key keeps supervisord's meaning and default.
We only walk the files ourselves (main file, `[include]`, the overlay) so that every problem is
collected with its file, section and key instead of stopping at the first.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthz.spec import HealthSpec, parse_health_section
from start.errors import ConfigError

SERVICE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_FILE_BYTES = 1 << 20  # a catalogue file larger than this is a mistake, not a catalogue

# Every key supervisord 4 reads in [program:x]; anything else is a typo it would ignore.
PROGRAM_KEYS = frozenset({
    "command", "process_name", "numprocs", "numprocs_start", "priority", "autostart",
    "autorestart", "startsecs", "startretries", "exitcodes", "stopsignal", "stopwaitsecs",
    "stopasgroup", "killasgroup", "user", "redirect_stderr", "stdout_logfile",
    "stdout_logfile_maxbytes", "stdout_logfile_backups", "stdout_capture_maxbytes",
    "stdout_events_enabled", "stdout_syslog", "stderr_logfile", "stderr_logfile_maxbytes",
    "stderr_logfile_backups", "stderr_capture_maxbytes", "stderr_events_enabled", "stderr_syslog",
    "environment", "directory", "umask", "serverurl",
})
IGNORED_SECTIONS = ("unix_http_server", "inet_http_server", "supervisorctl", "rpcinterface:")
UNSUPPORTED_SECTIONS = {
    "eventlistener:": "event listeners are not supported; run the listener as a [program:x]",
    "fcgi-program:": "fcgi-program is not supported; run the FastCGI server as a [program:x] "
    "behind nginx",
}


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One service, as the engine runs it. Built once from a ProcessConfig and a HealthSpec."""

    name: str
    argv: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]  # added to the pod's own environment
    directory: str | None
    uid: int | None
    umask: int | None
    priority: int
    autostart: bool
    autorestart: str  # "true" | "false" | "unexpected"
    startsecs: float
    startretries: int
    exitcodes: tuple[int, ...]
    stopsignal: int
    stopwaitsecs: float
    redirect_stderr: bool
    logfile_maxbytes: int
    logfile_backups: int
    health: HealthSpec
    source: str  # the file that defined it, for messages

    @property
    def after(self) -> tuple[str, ...]:
        return self.health.after


@dataclass(frozen=True, slots=True)
class Catalogue:
    services: tuple[ServiceSpec, ...]  # in spawn order: priority, then name
    notes: tuple[str, ...] = ()
    files: tuple[str, ...] = field(default=())

    def get(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.services if s.name == name), None)


def load_catalogue(
    location: Path,
    *,
    overlay: Path | None = None,
    environ: Mapping[str, str] | None = None,
    check_executables: bool = True,
) -> Catalogue:
    """Read and check a catalogue; raise ConfigError listing every problem found."""
    env = dict(os.environ if environ is None else environ)
    reader = _Reader(env)
    main = location / "supervisord.conf" if location.is_dir() else location
    reader.read_main(main)
    if overlay is not None:
        reader.apply_overlay(overlay)
    services = reader.build_services(check_executables=check_executables)
    if reader.problems:
        raise ConfigError(reader.problems)
    return Catalogue(
        services=tuple(sorted(services, key=lambda s: (s.priority, s.name))),
        notes=tuple(reader.notes),
        files=tuple(reader.files),
    )


class _Reader:
    def __init__(self, environ: dict[str, str]) -> None:
        from supervisor.options import UnhosedConfigParser

        self.environ = environ
        self.parser: Any = UnhosedConfigParser()
        self.parser.expansions = {f"ENV_{k}": v for k, v in environ.items()}
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.files: list[str] = []
        self.here = "."

    # -- files ---------------------------------------------------------------------------------

    def _read_text(self, path: Path, what: str) -> str | None:
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            self.problems.append(f"{path}: {what} not found")
            return None
        except IsADirectoryError:
            self.problems.append(f"{path}: {what} is a directory, not a file")
            return None
        except OSError as error:
            self.problems.append(f"{path}: cannot read {what}: {error.strerror}")
            return None
        if len(data) > MAX_FILE_BYTES:
            self.problems.append(f"{path}: {what} is larger than {MAX_FILE_BYTES} bytes")
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            self.problems.append(f"{path}: {what} is not UTF-8 text (byte {error.start})")
            return None

    def _merge(self, path: Path, what: str) -> bool:
        text = self._read_text(path, what)
        if text is None:
            return False
        before = set(self.parser.sections())
        try:
            # strict=True on a private parser finds a section repeated inside one file; the
            # shared parser (supervisor's, strict=False) would silently merge it.
            configparser.RawConfigParser(strict=True, inline_comment_prefixes=(";", "#"),
                                         interpolation=None).read_string(text, str(path))
            fresh: Any = type(self.parser)()
            fresh.read_string(text, str(path))
        except configparser.Error as error:
            self.problems.append(f"{path}: {_one_line(error)}")
            return False
        for section in fresh.sections():
            if section in before:
                first = self.parser.section_to_file.get(section, "?")
                self.problems.append(
                    f"{path}: [{section}] is already defined in {first}; "
                    "supervisord would silently merge the two, define it once"
                )
        self.parser.read_string(text, str(path))
        for section in set(self.parser.sections()) - before:
            self.parser.section_to_file[section] = str(path)
        self.parser.expand_here(str(path.parent.resolve()))
        self.files.append(str(path))
        return True

    def read_main(self, main: Path) -> None:
        self.here = str(main.parent.resolve())
        if not self._merge(main, "catalogue file"):
            return
        if not self.parser.has_section("include"):
            return
        from supervisor.options import expand

        raw = self.parser.get("include", "files", fallback=None)
        if raw is None:
            self.problems.append(f"{main}: [include] files: missing; list the files to include")
            return
        expansions = {"here": self.here, **self.parser.expansions}
        try:
            patterns = expand(raw, expansions, "include.files").split()
        except ValueError as error:
            self.problems.append(f"{main}: [include] files: {_one_line(error)}")
            return
        for pattern in patterns:
            matches = sorted(glob.glob(os.path.join(self.here, pattern)))
            if not matches:
                self.notes.append(f"{main}: [include] files: nothing matches {pattern!r}")
            for match in matches:
                if os.path.abspath(match) in map(os.path.abspath, self.files):
                    continue  # an include loop or a repeated pattern: read each file once
                self._merge(Path(match), "included file")

    def apply_overlay(self, overlay: Path) -> None:
        """Replace keys of existing sections: how the demo swaps commands and ports."""
        text = self._read_text(overlay, "overlay file")
        if text is None:
            return
        layer: Any = type(self.parser)()
        try:
            layer.read_string(text, str(overlay))
        except configparser.Error as error:
            self.problems.append(f"{overlay}: {_one_line(error)}")
            return
        layer.expand_here(str(overlay.parent.resolve()))
        for section in layer.sections():
            if not self.parser.has_section(section):
                self.problems.append(
                    f"{overlay}: [{section}] is not in the catalogue; an overlay only changes "
                    "sections the catalogue has"
                )
                continue
            for key, value in layer.items(section):
                self.parser.set(section, key, value)
        self.files.append(str(overlay))

    # -- sections --------------------------------------------------------------------------------

    def build_services(self, *, check_executables: bool) -> list[ServiceSpec]:
        from supervisor.options import ServerOptions

        options: Any = ServerOptions()
        options.here = self.here
        options.configfile = self.files[0] if self.files else "supervisord.conf"
        options.environ_expansions = dict(self.parser.expansions)
        pod_environment = self._supervisord_environment(options)

        health: dict[str, HealthSpec] = {}
        programs: list[str] = []
        for section in self.parser.sections():
            where = f"{self.parser.section_to_file.get(section, '?')}: [{section}]"
            kind, _, name = section.partition(":")
            if kind == "program":
                programs.append(section)
            elif kind == "health":
                health[name] = self._health(section, where)
            elif section in ("supervisord", "include", "group") or kind == "group":
                continue
            elif section.startswith(IGNORED_SECTIONS):
                self.notes.append(f"{where} has no meaning here and is ignored")
            elif (message := next((m for p, m in UNSUPPORTED_SECTIONS.items()
                                   if section.startswith(p)), None)) is not None:
                self.problems.append(f"{where} {message}")
            else:
                self.problems.append(
                    f"{where} unknown section kind; expected program:, health:, group:, "
                    "include or supervisord"
                )

        services: list[ServiceSpec] = []
        for section in programs:
            program = section.partition(":")[2]
            where = f"{self.parser.section_to_file.get(section, '?')}: [{section}]"
            self._check_keys(section, where)
            try:
                configs = options.processes_from_section(self.parser, section, program)
            except ValueError as error:
                self.problems.append(f"{where} {_strip_supervisor_suffix(error)}")
                continue
            spec_health = health.get(program, HealthSpec.default())
            for config in configs:
                spec = self._service(config, spec_health, pod_environment, where,
                                     check_executables)
                if spec is not None:
                    services.append(spec)

        names = {s.name for s in services}
        for program in health:
            if program not in names and f"program:{program}" not in self.parser.sections():
                file = self.parser.section_to_file.get(f"health:{program}", "?")
                self.problems.append(f"{file}: [health:{program}] names no [program:{program}]")
        self._check_after(services)
        return services

    def _supervisord_environment(self, options: Any) -> dict[str, str]:
        from supervisor.datatypes import dict_of_key_value_pairs
        from supervisor.options import expand

        raw = self.parser.get("supervisord", "environment", fallback="")
        try:
            environment: dict[str, str] = dict_of_key_value_pairs(
                expand(raw, {"here": self.here, **self.parser.expansions}, "environment")
            )
        except ValueError as error:
            self.problems.append(f"[supervisord] environment: {_one_line(error)}")
            return {}
        for key, value in environment.items():
            options.environ_expansions[f"ENV_{key}"] = value
            self.parser.expansions[f"ENV_{key}"] = value
        return environment

    def _check_keys(self, section: str, where: str) -> None:
        import difflib

        for key in self.parser.options(section):
            if key not in PROGRAM_KEYS:
                close = difflib.get_close_matches(key, PROGRAM_KEYS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.problems.append(f"{where} {key}: unknown key{hint}")

    def _health(self, section: str, where: str) -> HealthSpec:
        spec, problems = parse_health_section(dict(self.parser.items(section)))
        for problem in problems:
            key = f" {problem.key}:" if problem.key else ""
            self.problems.append(f"{where}{key} {problem.message}")
        for variable in spec.requires_env:
            if not self.environ.get(variable):
                self.problems.append(
                    f"{where} requires_env: {variable} is not set; "
                    "set it in the pod's environment before starting"
                )
        return spec

    def _service(
        self,
        config: Any,
        health: HealthSpec,
        pod_environment: dict[str, str],
        where: str,
        check_executables: bool,
    ) -> ServiceSpec | None:
        from supervisor.datatypes import RestartUnconditionally

        name = str(config.name)
        if not SERVICE_NAME.match(name):
            self.problems.append(
                f"{where} process name {name!r}: use letters, digits, '.', '_', '-'")
            return None
        environment = {**pod_environment, **(config.environment or {})}
        try:
            argv = tuple(shlex.split(config.command))
        except ValueError as error:
            self.problems.append(f"{where} command: {error}")
            return None
        if not argv:
            self.problems.append(f"{where} command: empty")
            return None
        if check_executables:
            resolved = _resolve(argv[0], environment.get("PATH", self.environ.get("PATH", "")))
            if resolved is None:
                self.problems.append(
                    f"{where} command: {argv[0]!r} is not an executable file"
                    + ("" if "/" in argv[0] else " on PATH")
                    + "; install it or fix the command"
                )
                return None
        if config.autorestart is RestartUnconditionally:
            autorestart = "true"
        elif config.autorestart is False:
            autorestart = "false"
        else:
            autorestart = "unexpected"
        return ServiceSpec(
            name=name,
            argv=argv,
            environment=tuple(sorted(environment.items())),
            directory=config.directory,
            uid=config.uid,
            umask=config.umask,
            priority=int(config.priority),
            autostart=bool(config.autostart),
            autorestart=autorestart,
            startsecs=float(config.startsecs),
            startretries=int(config.startretries),
            exitcodes=tuple(int(c) for c in config.exitcodes),
            stopsignal=int(config.stopsignal),
            stopwaitsecs=float(config.stopwaitsecs),
            redirect_stderr=bool(config.redirect_stderr),
            logfile_maxbytes=int(config.stdout_logfile_maxbytes),
            logfile_backups=int(config.stdout_logfile_backups),
            health=health,
            source=where.partition(": [")[0],
        )

    def _check_after(self, services: list[ServiceSpec]) -> None:
        # Programs that failed to build are already reported; naming them is not a second error.
        names = {s.name for s in services} | {
            section.partition(":")[2] for section in self.parser.sections()
            if section.startswith("program:")
        }
        graph = {s.name: s.after for s in services}
        for service in services:
            for dependency in service.after:
                if dependency not in names:
                    self.problems.append(
                        f"{service.source}: [health:{service.name}] after: no service named "
                        f"{dependency!r}"
                    )
        cycle = find_cycle(graph)
        if cycle:
            first = next(s for s in services if s.name == cycle[0])
            self.problems.append(
                f"{first.source}: [health:{cycle[0]}] after: dependency cycle "
                + " -> ".join(cycle)
            )


def find_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A cycle in `after` as a closed path (a -> b -> a), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _resolve(program: str, path: str) -> str | None:
    if "/" in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(program, path=path or None)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _strip_supervisor_suffix(error: BaseException) -> str:
    # supervisor appends "in section 'program:x' (file: '...')"; we already say where.
    return re.sub(r"\s+in section '[^']*' \(file: '[^']*'\)$", "", _one_line(error))
