"""The [health:NAME] section: defaults, every key, and every problem reported at once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthz.probes import ProbeSpec
from healthz.spec import HealthSpec, RestartBudget, SpecProblem, parse_health_section


def parse_ok(items: dict[str, str]) -> HealthSpec:
    spec, problems = parse_health_section(items)
    assert problems == []
    return spec


def test_defaults_are_designs() -> None:
    """A service without a section gets exactly the documented defaults."""
    spec = HealthSpec.default()
    assert spec.ready == ProbeSpec.none()
    assert spec.live.kind == "none"
    assert (spec.interval, spec.timeout, spec.failures, spec.start_timeout) == (5.0, 2.0, 3, 60.0)
    assert spec.after == ()
    assert spec.critical is True
    assert spec.requires_env == ()
    assert spec.restart_budget is None
    assert parse_ok({}) == spec


def test_every_key() -> None:
    """Every documented key parses into its typed field."""
    spec = parse_ok(
        {
            "ready": "http://127.0.0.1:3000/",
            "live": "tcp://127.0.0.1:3000",
            "interval": "2s",
            "timeout": "500ms",
            "failures": "5",
            "start_timeout": "2m",
            "after": "theia, coditect-v5-api codi2",
            "critical": "no",
            "requires_env": "JWT_SECRET,FDB_CLUSTER_FILE",
            "restart_budget": "10/10m",
        }
    )
    assert spec.ready.kind == "http"
    assert spec.ready.port == 3000
    assert spec.live.kind == "tcp"
    assert (spec.interval, spec.timeout, spec.failures, spec.start_timeout) == (2.0, 0.5, 5, 120.0)
    assert spec.after == ("theia", "coditect-v5-api", "codi2")
    assert spec.critical is False
    assert spec.requires_env == ("JWT_SECRET", "FDB_CLUSTER_FILE")
    assert spec.restart_budget == RestartBudget(count=10, window=600.0)


def test_spec_is_frozen() -> None:
    """Parsed configuration cannot be changed afterwards."""
    spec = HealthSpec.default()
    with pytest.raises(AttributeError):
        spec.interval = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("true", True), ("yes", True), ("on", True), ("1", True), ("TRUE", True),
        ("false", False), ("no", False), ("off", False), ("0", False), (" Off ", False),
    ],
)  # fmt: skip
def test_booleans_take_supervisords_words(word: str, value: bool) -> None:
    """critical accepts the words supervisord accepts for its booleans."""
    assert parse_ok({"critical": word}).critical is value


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("a,b", ("a", "b")),
        ("a b", ("a", "b")),
        (" a ,\n b,,c ", ("a", "b", "c")),
        ("a, a", ("a",)),
        ("", ()),
    ],
)
def test_lists_split_on_commas_and_whitespace(text: str, names: tuple[str, ...]) -> None:
    """after and requires_env are comma- or whitespace-separated, each name once."""
    assert parse_ok({"after": text}).after == names


def test_restart_budget_none_and_forms() -> None:
    """restart_budget takes RESTARTS/WINDOW with any duration, or none."""
    assert parse_ok({"restart_budget": "none"}).restart_budget is None
    assert parse_ok({"restart_budget": "3/90"}).restart_budget == RestartBudget(3, 90.0)
    assert parse_ok({"restart_budget": "5 / 1h"}).restart_budget == RestartBudget(5, 3600.0)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("ready", "ftp://x", "unknown probe scheme"),
        ("ready", "", "empty probe"),
        ("live", "tcp://127.0.0.1", "missing port"),
        ("interval", "fast", "not a duration"),
        ("interval", "0s", "more than 0"),
        ("timeout", "-1s", "negative"),
        ("start_timeout", "0", "more than 0"),
        ("failures", "0", "1 or more"),
        ("failures", "three", "whole number"),
        ("failures", "2.5", "whole number"),
        ("critical", "maybe", "not a boolean"),
        ("requires_env", "JWT_SECRET 1BAD", "'1BAD'"),
        ("restart_budget", "10", "RESTARTS/WINDOW"),
        ("restart_budget", "0/1m", "1 or more"),
        ("restart_budget", "10/soon", "bad window"),
        ("restart_budget", "10/0s", "more than 0"),
    ],
)
def test_bad_values(key: str, value: str, words: str) -> None:
    """A bad value is a problem naming its key; the field keeps its default."""
    spec, problems = parse_health_section({key: value})
    assert len(problems) == 1
    assert problems[0].key == key
    assert words in problems[0].message
    assert getattr(spec, key) == getattr(HealthSpec.default(), key)


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("intervall", "interval"),
        ("readiness", "ready"),
        ("requires-env", "requires_env"),
        ("start_timout", "start_timeout"),
        ("Critical", "critical"),
        ("failureThreshold", "failures"),
        ("depends_on", "after"),
    ],
)
def test_unknown_key_did_you_mean(key: str, suggestion: str) -> None:
    """An unknown key is an error with the closest known key suggested."""
    _, problems = parse_health_section({key: "1"})
    assert problems == [
        SpecProblem(
            key, f"unknown key {key!r} in a [health:…] section; did you mean {suggestion!r}?"
        )
    ]


def test_unknown_key_far_from_everything_lists_keys() -> None:
    """With nothing close, the message lists the known keys instead."""
    _, problems = parse_health_section({"zzzz": "1"})
    assert "known keys: ready, live, interval" in problems[0].message


def test_every_problem_is_collected() -> None:
    """The parse does not stop at the first problem: all of them come back, good keys applied."""
    spec, problems = parse_health_section(
        {
            "ready": "http://",
            "intervall": "5s",
            "timeout": "2x",
            "failures": "-1",
            "critical": "nope",
            "after": "nginx",
        }
    )
    assert [p.key for p in problems] == ["ready", "intervall", "timeout", "failures", "critical"]
    assert spec.after == ("nginx",)
    assert str(problems[0]).startswith("ready: ")


def ports(spec: HealthSpec) -> set[int]:
    return {port for probe in (spec.ready, spec.live) if (port := probe.loopback_port) is not None}


def test_ports_claimed_on_loopback() -> None:
    """A probe's loopback_port (what the catalogue checks for two services claiming one port)
    is its loopback port, none for remote or port-less probes."""
    assert ports(parse_ok({"ready": "http://127.0.0.1:80/x", "live": "tcp://localhost:81"})) == {
        80,
        81,
    }
    assert ports(parse_ok({"ready": "ws://[::1]:8765/", "live": "ws://127.0.0.1:8765/"})) == {8765}
    assert ports(parse_ok({"ready": "http://db.example:5432/", "live": "exec:true"})) == set()
    assert ports(parse_ok({"ready": "http://127.0.0.1/"})) == {80}
    assert ports(HealthSpec.default()) == set()


def test_missing_env() -> None:
    """missing_env names the required variables that are unset or empty."""
    spec = parse_ok({"requires_env": "JWT_SECRET FDB_CLUSTER_FILE HOME"})
    assert spec.missing_env({"JWT_SECRET": "", "HOME": "/root"}) == [
        "JWT_SECRET",
        "FDB_CLUSTER_FILE",
    ]


KEYS = st.sampled_from(
    [
        "ready",
        "live",
        "interval",
        "timeout",
        "failures",
        "start_timeout",
        "after",
        "critical",
        "requires_env",
        "restart_budget",
        "on_fatal",
        "exit_code",
        "oom_score_adj",
    ]
)


@given(st.dictionaries(KEYS | st.text(max_size=20), st.text(max_size=60), max_size=12))
def test_arbitrary_sections_give_problems_not_exceptions(items: dict[str, str]) -> None:
    """Any text in any key gives a spec and a list of problems; nothing is ever raised."""
    spec, problems = parse_health_section(items)
    assert isinstance(spec, HealthSpec)
    assert all(isinstance(p, SpecProblem) and p.message for p in problems)
    assert spec.interval > 0 and spec.timeout > 0 and spec.failures >= 1


def test_exit_policy_and_oom_score_adj() -> None:
    """on_fatal keeps running by default; exit_code goes with on_fatal=exit; oom_score_adj is
    the kernel's range, or none (the pod's own)."""
    spec = HealthSpec.default()
    assert (spec.on_fatal, spec.exit_code, spec.oom_score_adj) == ("keep", 75, None)
    spec = parse_ok({"on_fatal": " Exit ", "exit_code": "3", "oom_score_adj": "-1000"})
    assert (spec.on_fatal, spec.exit_code, spec.oom_score_adj) == ("exit", 3, -1000)
    assert parse_ok({"oom_score_adj": "+1000"}).oom_score_adj == 1000
    assert parse_ok({"oom_score_adj": "none"}).oom_score_adj is None


@pytest.mark.parametrize(
    ("items", "key", "fragment"),
    [
        ({"on_fatal": "restart"}, "on_fatal", "not keep or exit"),
        ({"on_fatal": "exit", "exit_code": "0"}, "exit_code", "1 to 255"),
        ({"on_fatal": "exit", "exit_code": "256"}, "exit_code", "1 to 255"),
        ({"on_fatal": "exit", "exit_code": "x"}, "exit_code", "not a whole number"),
        ({"exit_code": "3"}, "exit_code", "only used with on_fatal=exit"),
        ({"oom_score_adj": "1001"}, "oom_score_adj", "-1000 to 1000"),
        ({"oom_score_adj": "-2000"}, "oom_score_adj", "-1000 to 1000"),
        ({"oom_score_adj": "5.5"}, "oom_score_adj", "not a whole number"),
        ({"oom_score_adj": "-+5"}, "oom_score_adj", "not a whole number"),
        ({"oomscoreadjust": "5"}, "oomscoreadjust", "did you mean 'oom_score_adj'"),
    ],
)
def test_exit_policy_and_oom_score_adj_problems(items: dict[str, str], key: str,
                                                fragment: str) -> None:
    """Each bad value is one problem naming its key and what to write instead."""
    _spec, problems = parse_health_section(items)
    assert len(problems) == 1, problems
    assert problems[0].key == key
    assert fragment in problems[0].message
