"""The corpus: every directory under tests/catalogues/ is a catalogue run through the real
command. `expected.txt` holds the exact stderr of an invalid one (exit 78), `valid.txt` the exact
stdout of a valid one (exit 0); the case's own path is written `<dir>`.

Regenerate after a deliberate change of wording: `UPDATE_CATALOGUE_CORPUS=1 pytest
tests/test_catalogue_corpus.py`, then read the diff.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import PYTHON, ROOT

CORPUS = Path(__file__).resolve().parent / "catalogues"
# A small, fixed environment: the messages must not depend on who runs the tests.
ENVIRON = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LC_ALL": "C.UTF-8",
           "CATALOGUE_TEST_VALUE": "hello", "CATALOGUE_TEST_SECONDS": "1000"}
INVALID = sorted(p.parent.name for p in CORPUS.glob("*/expected.txt"))
VALID = sorted(p.parent.name for p in CORPUS.glob("*/valid.txt"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, *args], env=ENVIRON, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def normalised(text: str, case: Path) -> str:
    return text.replace(str(case), "<dir>")


def compare(case: Path, name: str, actual: str) -> None:
    expected_file = case / name
    if os.environ.get("UPDATE_CATALOGUE_CORPUS"):
        expected_file.write_text(actual)
    assert actual.splitlines() == expected_file.read_text().splitlines()


@pytest.mark.parametrize("name", INVALID)
def test_invalid_catalogue_prints_exactly_its_problems(name: str) -> None:
    """`coditect-start --check` on a broken catalogue: the expected lines, exit 78."""
    case = CORPUS / name
    done = run("-m", "start", "--check", "--catalogue", str(case))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 78, done.stderr
    compare(case, "expected.txt", normalised(done.stderr, case))


@pytest.mark.parametrize("name", VALID)
def test_valid_catalogue_is_accepted(name: str) -> None:
    """A correct catalogue (a real supervisord.conf among them) is accepted, with its notes."""
    case = CORPUS / name
    done = run("-m", "start", "--check", "--catalogue", str(case))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    compare(case, "valid.txt", normalised(done.stdout, case))


def test_corpus_is_not_empty() -> None:
    """The glob found the cases (a moved directory must not make the suite pass vacuously)."""
    assert len(INVALID) >= 20 and VALID


def test_podctl_validate_prints_the_same_lines() -> None:
    """`podctl validate DIR` passes the engine's own check through: same lines, same code."""
    case = CORPUS / "supervisord-rejects"
    direct = run("-m", "start", "--check", "--catalogue", str(case))
    through = run("-m", "healthz.podctl", "validate", str(case))
    assert through.returncode == direct.returncode == 78
    assert through.stderr == direct.stderr
    assert through.stderr.splitlines() == (case / "expected.txt").read_text().replace(
        "<dir>", str(case)).splitlines()
