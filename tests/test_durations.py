"""Durations as the catalogue writes them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthz.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("5", 5.0),
        ("0.25", 0.25),
        ("0", 0.0),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("  2S ", 2.0),
        ("10M", 600.0),
    ],
)
def test_parses(text: str, seconds: float) -> None:
    """Every unit the catalogue documents, compounds and a bare number of seconds parse."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("-1s", "negative"),
        ("-5", "negative"),
        ("2x", "not a duration"),
        ("s", "not a duration"),
        ("1.2.3s", "not a duration"),
        ("nan", "not a duration"),
        ("inf", "not a duration"),
        ("1e3", "not a duration"),
        ("2 s", "not a duration"),
        ("1s1s", "twice"),
        ("9" * 400, "too large"),
        ("9" * 400 + "h", "too large"),
    ],
)
def test_rejects(text: str, words: str) -> None:
    """Anything else is a ValueError whose message says what is wrong and what is expected."""
    with pytest.raises(ValueError, match=words):
        parse_duration(text)


def test_message_names_the_text_and_the_forms() -> None:
    """The message quotes the bad text and shows the accepted forms."""
    with pytest.raises(ValueError, match="'5 minutes'") as caught:
        parse_duration("5 minutes")
    assert "'5 minutes'" in str(caught.value)
    assert "500ms" in str(caught.value)


@given(st.text())
def test_arbitrary_text_parses_or_raises_value_error(text: str) -> None:
    """Arbitrary text gives a finite non-negative number or a ValueError, nothing else."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert math.isfinite(seconds)
    assert seconds >= 0


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["ms", "s", "m", "h", ""]))
def test_round_numbers_round_trip(number: int, unit: str) -> None:
    """An integer with any unit parses to that integer times the unit."""
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}[unit]
    assert parse_duration(f"{number}{unit}") == pytest.approx(number * factor)


@pytest.mark.parametrize(
    ("seconds", "text"), [(2, "2s"), (2.0, "2s"), (0.5, "500ms"), (1.5, "1.5s"), (90, "90s")]
)
def test_format(seconds: float, text: str) -> None:
    """Reasons show durations the way the catalogue writes them."""
    assert format_duration(seconds) == text
