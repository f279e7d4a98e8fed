"""podctl's presentation and argument rules, in-process and without a pod."""

from __future__ import annotations

import argparse
import io

import pytest

from healthz.model import State
from healthz.podctl import _signal_arg, build_parser, said
from healthz.podctl_errors import PodctlError, check_name
from healthz.podctl_table import (
    HEADERS,
    STATE_COLOURS,
    human_bytes,
    human_cpu,
    human_duration,
    render,
    use_colour,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (59.9, "59s"), (60, "1m00s"), (192, "3m12s"), (3599, "59m59s"),
     (3600, "1h00m"), (7500, "2h05m"), (86399, "23h59m"), (86400, "1d00h"), (277200, "3d05h"),
     (-3, "0s")],
)  # fmt: skip
def test_human_duration(seconds: float | None, text: str) -> None:
    """Uptime reads like 3m12s or 2h05m: two units, the second zero-padded."""
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "-"), (0, "0B"), (1023, "1023B"), (1024, "1.0K"), (12_900_000, "12.3M"),
     (1536 * 1024**2, "1.5G"), (3 * 1024**5, "3.0P"), (5000 * 1024**5, "5000.0P")],
)  # fmt: skip
def test_human_bytes(n: int | None, text: str) -> None:
    """Memory in powers of 1024 with one decimal, as top and htop print it."""
    assert human_bytes(n) == text


def test_human_cpu() -> None:
    """CPU is a percentage with one decimal, or `-` when not running."""
    assert (human_cpu(None), human_cpu(0), human_cpu(112.345)) == ("-", "0.0%", "112.3%")


def test_every_state_has_a_colour() -> None:
    """The colour map covers every lifecycle state of healthz.model.State."""
    assert set(STATE_COLOURS) == {s.value for s in State}


def test_render_aligns_visible_text_even_when_coloured() -> None:
    """Colour codes do not count toward column widths."""
    services = [
        {"name": "nginx", "state": "running", "ready": True, "pid": 7, "restarts": 0},
        {"name": "coditect-v5-api", "state": "backoff", "ready": False, "restarts": 12,
         "last_exit": "signal 9 (SIGKILL)"},
    ]  # fmt: skip
    plain = render(services, colour=False).splitlines()
    coloured = render(services, colour=True).splitlines()
    assert plain[0].split() == [w for h in HEADERS for w in h.split()]
    stripped = [line.replace("\x1b[32m", "").replace("\x1b[31m", "").replace("\x1b[0m", "")
                for line in coloured]  # fmt: skip
    assert stripped == plain
    assert "\x1b[31mbackoff" in coloured[2]
    assert plain[2].index("12") == plain[0].index("RESTARTS")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color() -> None:
    """Colour needs a TTY, and NO_COLOR (non-empty) or TERM=dumb turns it off."""
    assert use_colour(Terminal(), {}) is True
    assert use_colour(io.StringIO(), {}) is False
    assert use_colour(Terminal(), {"NO_COLOR": "1"}) is False
    assert use_colour(Terminal(), {"TERM": "dumb"}) is False


@pytest.mark.parametrize(
    ("text", "sent"), [("HUP", "HUP"), ("sighup", "HUP"), ("9", "KILL"), ("term", "TERM")]
)
def test_signal_spellings(text: str, sent: str) -> None:
    """Names with or without SIG, any case, and numbers, all become the bare name."""
    assert _signal_arg(text) == sent


@pytest.mark.parametrize("text", ["", "NOPE", "0", "65", "-1", "1.5"])
def test_bad_signals(text: str) -> None:
    """Anything that is not a signal is an argument error."""
    with pytest.raises(argparse.ArgumentTypeError):
        _signal_arg(text)


@pytest.mark.parametrize(
    "name", ["nginx", "coditect-v5-api", "file_monitor", "a.b", "X9", "_x", "x" * 128]
)
def test_good_names(name: str) -> None:
    """The control API's name rule lets real service names through."""
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "../x", "a/b", "x y", "x\x00", "é", "/etc", "x" * 129, "-x"]
)
def test_bad_names(name: str) -> None:
    """Nothing with a slash, a space, a non-ASCII letter or a leading dot or dash, nor too long."""
    with pytest.raises(PodctlError) as caught:
        check_name(name)
    assert caught.value.code == 2


def test_parser_defaults() -> None:
    """logs shows 10 lines by default; global options are absent unless given."""
    args = build_parser().parse_args(["logs", "nginx"])
    assert (args.lines, args.follow) == (10, False)
    assert not hasattr(args, "socket")
    args = build_parser().parse_args(["--timeout", "2.5", "signal", "TERM", "a", "b", "--no-wait"])
    assert (args.timeout, args.sig, args.names, args.no_wait) == (2.5, "TERM", ["a", "b"], True)


@pytest.mark.parametrize(
    ("message", "line"),
    [
        ("theia: running, pid 7, ready", "theia: running, pid 7, ready"),
        ("stop theia: accepted", "stop theia: accepted"),
        ("not ready within 120s", "theia: not ready within 120s"),
        ("theia-2: stopped", "theia: theia-2: stopped"),
    ],
)
def test_outcomes_name_their_service_once(message: str, line: str) -> None:
    """The pod's messages name the service; podctl adds the name only when one does not."""
    assert said("theia", message) == line
