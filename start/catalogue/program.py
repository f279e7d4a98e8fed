"""`[program:x]` through the `supervisor` library: the one module that touches it.

supervisor's `processes_from_section` gives every key supervisord's meaning and default, but it
stops at the first bad value and some of its messages are about something else (a bare `%s`
inserts its whole expansion table; a `stdout_logfile` in a missing directory fails although
we never write there). So each key is first checked alone, with supervisor's own converter and
message, and only a section with no problem is handed to `processes_from_section`.
"""

from __future__ import annotations

import platform
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import supervisor.datatypes as d
from supervisor.options import ServerOptions, UnhosedConfigParser

from healthz.digits import ASCII_ONLY, foreign_digits
from healthz.probe_spec import MAX_COMMAND_CHARS, command_too_long
from healthz.spelling import did_you_mean

MAX_NUMPROCS = 1000
# Every value, once expanded, is refused past this before supervisor converts it: supervisor
# splits `command` and `environment` with shlex, whose time grows with the square of a word's
# length (a 1 MiB command took 12 s, and numprocs repeats it for each process).
MAX_VALUE_CHARS = MAX_COMMAND_CHARS

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
# Accepted for supervisord's sake, without effect here (docs/CATALOGUE.md says why).
NO_EFFECT_KEYS = frozenset({
    "stopasgroup", "killasgroup", "stdout_logfile", "stderr_logfile", "stderr_logfile_maxbytes",
    "stderr_logfile_backups", "stdout_capture_maxbytes", "stderr_capture_maxbytes",
    "stdout_events_enabled", "stderr_events_enabled", "stdout_syslog", "stderr_syslog",
    "serverurl",
})
# [supervisord]: only `environment` means something here; the rest is the daemon's own setup.
SUPERVISORD_KEYS = frozenset({
    "logfile", "logfile_maxbytes", "logfile_backups", "loglevel", "pidfile", "umask",
    "nodaemon", "silent", "minfds", "minprocs", "nocleanup", "childlogdir", "user",
    "directory", "strip_ansi", "environment", "identifier",
})
GROUP_KEYS = frozenset({"programs", "priority"})
INCLUDE_KEYS = frozenset({"files"})
_NOT_NEGATIVE = ("numprocs_start", "startsecs", "startretries", "stopwaitsecs",
                 "stdout_logfile_backups", "stdout_logfile_maxbytes")
_LARGEST = 1 << 62  # any count, size or number of seconds beyond this is a slip of the keyboard

# One %-token: `%%`, or `%(name)` with at most a small width, or anything else (an error).
_TOKEN = re.compile(
    r"%(?:%|\((?P<name>[^()]*)\)(?P<spec>[#0\- +]*\d{0,3}(?:\.\d{0,3})?[diouxXeEfFgGcrsa])|"
    r"(?P<bad>))")


def new_parser() -> Any:
    """supervisor's own parser class: `;`/`#` inline comments, repeated sections merged."""
    return UnhosedConfigParser()


def expand(value: str, names: Mapping[str, object]) -> str:
    """supervisord's `%(name)s` expansion; ValueError saying what is wrong and what to write.
    A `%` that is not `%%` or `%(name)…` is refused: supervisord would insert its whole table
    of names for a lone `%s`, or fail with a message about Python formatting."""
    for token in _TOKEN.finditer(value):
        if token.group("bad") is not None:
            shown = value[token.start():].split(None, 1)[0][:12]
            raise ValueError(f"{shown!r} is not an expansion; write %% for a literal %, "
                             "or %(name)s")
        name = token.group("name")
        if name is not None and name not in names:
            raise ValueError(_unknown_name(name, names))
    try:
        return value % names
    except (ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"{value!r}: cannot expand: {error}") from None


def _unknown_name(name: str, names: Mapping[str, object]) -> str:
    if name.startswith("ENV_"):
        return (f"%({name})s: {name[4:]} is not set in the pod's environment (nor in "
                "[supervisord] environment or this program's environment)")
    plain = [n for n in names if not n.startswith("ENV_")]
    return (f"%({name})s: no such name{did_you_mean(name, plain)} (known: "
            f"{', '.join(sorted(plain))}, ENV_<variable>)")


def key_value_pairs(text: str) -> dict[str, str]:
    """`A=1,B="x, y"` as supervisord reads `environment`."""
    try:
        pairs: dict[str, str] = d.dict_of_key_value_pairs(text)
    except ValueError:
        raise
    except Exception as error:  # shlex and friends: a user's quoting, never a traceback
        raise ValueError(str(error)) from None
    return pairs


def user_id(name: str) -> int:
    """`user=` as supervisord reads it (a name or a uid of this system); ValueError if none."""
    return int(d.name_to_uid(name))


def truth(text: str) -> bool:
    """A boolean as supervisord reads one (`true`/`yes`/`on`/`1`…); ValueError otherwise."""
    return bool(d.boolean(text))


def base_names(here: str, program: str, group: str,
               environ_expansions: Mapping[str, str]) -> dict[str, object]:
    """The names supervisord offers every key of a [program:x] (process_num added per process)."""
    return {**environ_expansions, "here": here, "program_name": program, "group_name": group,
            "host_node_name": platform.node(), "process_num": 0, "numprocs": 1}


def _converters() -> dict[str, Callable[[str], object]]:
    table: dict[str, Callable[[str], object]] = {
        "autorestart": d.auto_restart, "stopsignal": d.signal_number,
        "exitcodes": d.list_of_exitcodes, "user": d.name_to_uid, "umask": d.octal_type,
        "process_name": d.process_or_group_name,
    }
    for key in ("priority", "startretries", "numprocs", "numprocs_start",
                "stdout_logfile_backups", "stderr_logfile_backups"):
        table[key] = _whole_number("a whole number")
    for key in ("startsecs", "stopwaitsecs"):
        table[key] = _whole_number("a whole number of seconds")
    for key in ("autostart", "stopasgroup", "killasgroup", "redirect_stderr",
                "stdout_events_enabled", "stderr_events_enabled", "stdout_syslog",
                "stderr_syslog"):
        table[key] = d.boolean
    for key in ("stdout_logfile_maxbytes", "stderr_logfile_maxbytes", "stdout_capture_maxbytes",
                "stderr_capture_maxbytes"):
        table[key] = _byte_size
    return table


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _whole_number(expected: str) -> Callable[[str], object]:
    """supervisor's `integer`, with a message that says what the key takes: its own is
    Python's ("invalid literal for int() with base 10"), about code rather than the file."""

    def convert(text: str) -> object:
        if not _INTEGER.fullmatch(text.strip()):
            raise ValueError(f"expected {expected}, got {text.strip()!r}")
        return d.integer(text.strip())

    return convert


def _byte_size(text: str) -> object:
    """supervisor's `byte_size` (`1024`, `50MB`, `1GB`), with a message that names the unit."""
    try:
        return d.byte_size(text)
    except ValueError:
        raise ValueError(f"expected a size in bytes such as 1024, 50KB, 50MB or 1GB, got "
                         f"{text.strip()!r}") from None


@dataclass(slots=True)
class Program:
    """What one [program:x] section became: supervisor's ProcessConfigs (one per process, in
    process_num order) and the names each was expanded with, or the problems (key, message)."""

    configs: list[Any] = field(default_factory=list)
    names: list[dict[str, object]] = field(default_factory=list)
    problems: list[tuple[str | None, str]] = field(default_factory=list)
    no_effect: list[str] = field(default_factory=list)


def read_program(parser: Any, section: str, group: str, names: dict[str, object],
                 skip: set[str], configfile: str) -> Program:
    """Check every key of `section` alone, then let supervisor build its processes.
    `skip`: keys already reported (a value cut by a comment) that must not be reported twice."""
    result = Program()
    raw = {key: value for key, value in parser.items(section) if key not in skip}
    for key in raw:
        if key not in PROGRAM_KEYS:
            result.problems.append((key, f"unknown key{did_you_mean(key, PROGRAM_KEYS)}"))
        elif key in NO_EFFECT_KEYS:
            result.no_effect.append(key)
    converters = _converters()
    values: dict[str, object] = {}
    names = dict(names)
    # numprocs first (process_num and numprocs are names the others may use), then
    # environment (its variables become ENV_ names for the keys after it).
    order = ["numprocs", "numprocs_start", "environment",
             *sorted(k for k in raw if k in PROGRAM_KEYS)]
    for key in dict.fromkeys(order):
        if key not in raw:
            continue
        try:
            if key == "process_name":  # expanded per process by supervisor; check its shape
                expand(raw[key], {**names, "process_num": 0})
                values[key] = converters[key](raw[key])
                continue
            text = expand(raw[key], names)
            if (too_long := value_too_long(key, text)) is not None:
                result.problems.append((key, too_long))
                continue
            if key == "environment":
                for name, value in key_value_pairs(text).items():
                    names[f"ENV_{name}"] = value
            elif key in converters:
                if key != "process_name" and foreign_digits(text):
                    # supervisor's int() would read a full-width 15 as 15
                    raise ValueError(f"{text.strip()!r}: {ASCII_ONLY}")
                values[key] = converters[key](text)
        except ValueError as error:
            result.problems.append((key, one_line(error)))
            continue
        except Exception as error:  # supervisor's converters are not ours: never a traceback
            result.problems.append((key, f"{raw[key]!r}: {one_line(error)}"))
            continue
        if key == "numprocs":
            names["numprocs"] = values[key]
        elif key == "numprocs_start":
            names["process_num"] = values[key]
    _check_ranges(values, raw, result)
    if "command" not in raw and "command" not in skip:
        result.problems.append((None, "no command = …; every program needs one"))
    if result.problems or skip:
        return result
    return _build(parser, section, group, values, names, configfile, result)


def value_too_long(key: str, text: str) -> str | None:
    """Why a value is refused before supervisor converts it (None when it is not)."""
    if key == "command":
        return command_too_long(text)
    if len(text) <= MAX_VALUE_CHARS:
        return None
    return (f"is {len(text)} characters long, more than {MAX_VALUE_CHARS}; no value "
            "needs to be this long")


def _check_ranges(values: dict[str, object], raw: dict[str, str], result: Program) -> None:
    for key in _NOT_NEGATIVE:
        value = values.get(key)
        if isinstance(value, int) and value < 0:
            result.problems.append((key, f"{raw[key].strip()!r} must be 0 or more"))
    for key, value in values.items():
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _LARGEST:
            result.problems.append((key, f"{raw[key].strip()[:20]!r} is too large"))
    numprocs = values.get("numprocs", 1)
    if isinstance(numprocs, int) and numprocs < 0:
        result.problems.append(("numprocs", f"{numprocs} must be 0 or more"))
    elif isinstance(numprocs, int) and numprocs > MAX_NUMPROCS:
        result.problems.append(("numprocs", f"{numprocs} is more than {MAX_NUMPROCS} processes"))
    elif (isinstance(numprocs, int) and numprocs > 1
          and "%(process_num)" not in raw.get("process_name", "")):
        result.problems.append(("process_name", (
            f"numprocs is {numprocs}, so process_name must hold %(process_num), e.g. "
            "process_name=%(program_name)s_%(process_num)02d")))
    if values.get("stopasgroup") is True and values.get("killasgroup") is False:
        result.problems.append(("killasgroup", "cannot be false when stopasgroup is true"))


def _build(parser: Any, section: str, group: str, values: dict[str, object],
           names: dict[str, object], configfile: str, result: Program) -> Program:
    # A copy of the section without the log file names: we never write there, so a directory
    # that does not exist here must not fail a file supervisord's own host would accept.
    shadow = new_parser()
    shadow.expansions = dict(parser.expansions)
    shadow.add_section(section)
    for key, value in parser.items(section):
        if key not in ("stdout_logfile", "stderr_logfile"):
            shadow.set(section, key, value)
    shadow.section_to_file[section] = configfile
    options: Any = _server_options(ServerOptions)
    options.here = str(names["here"])
    options.configfile = configfile
    options.environ_expansions = {k: v for k, v in names.items() if k.startswith("ENV_")}
    try:
        configs = options.processes_from_section(shadow, section, group)
    except Exception as error:  # ValueError mostly; nothing from the library escapes
        result.problems.append((None, _strip_supervisor_suffix(error)))
        return result
    start = values.get("numprocs_start", 0)
    first = start if isinstance(start, int) else 0
    for index, config in enumerate(configs):
        process_names = {**names, "process_num": first + index, "numprocs": len(configs)}
        for name, value in (config.environment or {}).items():
            process_names[f"ENV_{name}"] = value
        result.configs.append(config)
        result.names.append(process_names)
    return result


def autorestart_word(config: Any) -> str:
    if config.autorestart is d.RestartUnconditionally:
        return "true"
    return "false" if config.autorestart is False else "unexpected"


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _strip_supervisor_suffix(error: BaseException) -> str:
    # supervisor appends "in section 'program:x' (file: '...')"; we already say where.
    return re.sub(r"\s+in section '[^']*' \(file: '[^']*'\)$", "", one_line(error))


def _server_options(factory: Callable[[], Any]) -> Any:
    """supervisor's ServerOptions. Its constructor asks `tempfile` for a default childlogdir we
    never use, which raises on a read-only root filesystem without TMPDIR (found by the soak):
    for that one question any existing directory will do, since nothing is written there."""
    try:
        return factory()
    except FileNotFoundError:
        saved, tempfile.tempdir = tempfile.tempdir, "/"
        try:
            return factory()
        finally:
            tempfile.tempdir = saved
