"""The ``[health:NAME]`` section of the catalogue, parsed into a frozen :class:`HealthSpec`.

supervisord ignores the section; it is ours (docs/CATALOGUE.md). Every problem is
collected, none stops the parse: the engine reports them all at once, adding file and section.
Imports nothing heavy: the catalogue is read before the first child is spawned.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from healthz.durations import parse_duration
from healthz.probe_spec import SELF_REPORTED, ProbeSpec, parse_probe
from healthz.spelling import did_you_mean

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LIST_SEPARATOR = re.compile(r"[\s,]+")
_WHOLE = re.compile(r"[+-]?[0-9]{1,6}")  # ASCII digits only (tests/test_unicode_digits.py)


@dataclass(frozen=True, slots=True)
class RestartBudget:
    """At most `count` restarts within `window` seconds (``10/10m``)."""

    count: int
    window: float

    def __str__(self) -> str:
        return f"{self.count}/{self.window:g}s"


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One thing wrong in a section; `key` is None when it is about the section as a whole."""

    key: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


_NO_PROBE = ProbeSpec.none()


@dataclass(frozen=True, slots=True)
class HealthSpec:
    """How one service's health is known; the defaults are docs/CATALOGUE.md's."""

    ready: ProbeSpec = _NO_PROBE
    live: ProbeSpec = _NO_PROBE
    interval: float = 5.0
    timeout: float = 2.0
    failures: int = 3
    start_timeout: float = 60.0
    after: tuple[str, ...] = ()
    critical: bool = True
    requires_env: tuple[str, ...] = ()
    # Variables only this service (and its exec probes) is given: secrets of the whole pod,
    # withheld from every service that does not name them (start.catalogue.secrecy).
    secrets: tuple[str, ...] = ()
    # Meant to be reached from outside the pod: its command may bind a wildcard address
    # without a warning (start.catalogue.exposure).
    public: bool = False
    restart_budget: RestartBudget | None = None
    watchdog: float | None = None  # seconds between the service's WATCHDOG=1 (sd_notify)
    # When it can no longer be healed (fatal, or past restart_budget): "keep" running and let
    # /livez or /startupz tell the kubelet, or "exit": drain and end the pod with `exit_code`
    # (a plain `docker run` has no kubelet to ask).
    on_fatal: str = "keep"
    exit_code: int = 75  # EX_TEMPFAIL: a restart of the container may heal it
    # Written to the child's /proc/self/oom_score_adj before exec (None: PID 1's, inherited).
    oom_score_adj: int | None = None

    @classmethod
    def default(cls) -> HealthSpec:
        """The health of a service without a ``[health:NAME]`` section: the process alone."""
        return cls()

    def missing_env(self, environ: Mapping[str, str]) -> list[str]:
        """The `requires_env` names unset or empty in `environ`, in catalogue order."""
        return [name for name in self.requires_env if not environ.get(name)]


def parse_health_section(items: Mapping[str, str]) -> tuple[HealthSpec, list[SpecProblem]]:
    """Parse a section's key/value pairs. Problems are returned, never raised; a key whose value
    is wrong keeps its default so that the rest can still be checked."""
    problems: list[SpecProblem] = []
    values: dict[str, Any] = {}
    for raw_key, raw_value in items.items():
        key = raw_key.strip()
        parser = _PARSERS.get(key)
        if parser is None:
            problems.append(SpecProblem(raw_key, _unknown_key(key)))
            continue
        try:
            values[key] = parser(raw_value)
        except ValueError as exc:
            problems.append(SpecProblem(key, str(exc)))
    live = values.get("live")
    if isinstance(live, ProbeSpec) and live.kind in SELF_REPORTED:
        problems.append(SpecProblem("live", f"{live.text!r} tells readiness only; for a "
                                    "liveness signal from the service use watchdog=DURATION"))
        del values["live"]
    if "exit_code" in values and values.get("on_fatal", "keep") != "exit":
        problems.append(SpecProblem("exit_code", "only used with on_fatal=exit; add it or "
                                    "remove exit_code"))
    return replace(HealthSpec(), **values), problems


def _unknown_key(key: str) -> str:
    message = f"unknown key {key!r} in a [health:…] section"
    folded = key.lower().replace("-", "_")
    if folded in _ALIASES:
        return f"{message}; did you mean {_ALIASES[folded]!r}?"
    return message + (did_you_mean(folded, _PARSERS) or f"; known keys: {', '.join(_PARSERS)}")


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text.strip()!r} must be more than 0")
    return seconds


def _failures(text: str) -> int:
    stripped = text.strip()
    if not stripped.isdecimal() or not stripped.isascii():
        raise ValueError(f"{stripped!r} is not a whole number of failures (1 or more)")
    count = int(stripped)
    if count < 1:
        raise ValueError(f"{stripped!r}: failures must be 1 or more")
    return count


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{text.strip()!r} is not a boolean; use true/false, yes/no, on/off or 1/0")


def _names(text: str) -> tuple[str, ...]:
    tokens = [token for token in _LIST_SEPARATOR.split(text.strip()) if token]
    return tuple(dict.fromkeys(tokens))  # once each, in the order written


def _env_names(text: str) -> tuple[str, ...]:
    names = _names(text)
    bad = [name for name in names if not _ENV_NAME.fullmatch(name)]
    if bad:
        shown = ", ".join(repr(name) for name in bad)
        raise ValueError(f"not environment variable names: {shown}")
    return names


def _watchdog(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    return _positive_duration(text)


def _restart_budget(text: str) -> RestartBudget | None:
    stripped = text.strip()
    if stripped.lower() == "none":
        return None
    count_text, slash, window_text = stripped.partition("/")
    count_text = count_text.strip()
    if not slash or not count_text.isdecimal() or not count_text.isascii():
        raise ValueError(
            f"{stripped!r} is not a restart budget; expected RESTARTS/WINDOW, e.g. 10/10m"
        )
    count = int(count_text)
    if count < 1:
        raise ValueError(f"{stripped!r}: the number of restarts must be 1 or more")
    try:
        window = parse_duration(window_text)
    except ValueError as exc:
        raise ValueError(f"{stripped!r}: bad window: {exc}") from None
    if window <= 0:
        raise ValueError(f"{stripped!r}: the window must be more than 0")
    return RestartBudget(count=count, window=window)


def _on_fatal(text: str) -> str:
    word = text.strip().lower()
    if word not in ("keep", "exit"):
        raise ValueError(f"{text.strip()!r} is not keep or exit")
    return word


def _whole(text: str, low: int, high: int, what: str) -> int:
    stripped = text.strip()
    if not _WHOLE.fullmatch(stripped):
        raise ValueError(f"{stripped!r} is not a whole number; {what}")
    value = int(stripped)
    if not low <= value <= high:
        raise ValueError(f"{stripped!r} is out of range; {what}")
    return value


def _exit_code(text: str) -> int:
    return _whole(text, 1, 255, "an exit code is 1 to 255")


def _oom_score_adj(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    return _whole(text, -1000, 1000, "oom_score_adj is -1000 to 1000, or none")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "ready": parse_probe,
    "live": parse_probe,
    "interval": _positive_duration,
    "timeout": _positive_duration,
    "failures": _failures,
    "start_timeout": _positive_duration,
    "after": _names,
    "critical": _boolean,
    "requires_env": _env_names,
    "secrets": _env_names,
    "public": _boolean,
    "restart_budget": _restart_budget,
    "watchdog": _watchdog,
    "on_fatal": _on_fatal,
    "exit_code": _exit_code,
    "oom_score_adj": _oom_score_adj,
}

# What people used to Kubernetes or Compose write instead, beyond what difflib finds close.
_ALIASES = {
    "readiness": "ready",
    "readiness_probe": "ready",
    "readinessprobe": "ready",
    "liveness": "live",
    "liveness_probe": "live",
    "livenessprobe": "live",
    "period": "interval",
    "period_seconds": "interval",
    "periodseconds": "interval",
    "timeout_seconds": "timeout",
    "timeoutseconds": "timeout",
    "failure_threshold": "failures",
    "failurethreshold": "failures",
    "depends_on": "after",
    "requires": "after",
    "startup_timeout": "start_timeout",
    "watchdog_sec": "watchdog",
    "watchdogsec": "watchdog",
    "oomscoreadjust": "oom_score_adj",
    "oom_score_adjust": "oom_score_adj",
    "on_failure": "on_fatal",
    "exitcode": "exit_code",
}
