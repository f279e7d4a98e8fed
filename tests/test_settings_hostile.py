"""Any settings.json (any depth, any size, any bytes) is merged or set aside: never a
traceback, never a boot that stops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coditect_init import prepare
from coditect_init.settings import MAX_BYTES, MAX_DEPTH

ROOT = Path(__file__).resolve().parent.parent

HOSTILE = {
    "nested-500": b'{"a":' * 500 + b"1" + b"}" * 500,
    "nested-100000-unclosed": b'{"a":' * 100_000,
    "arrays-1m": b"[" * (1 << 20),
    "huge": b'{"pad": "' + b"x" * (MAX_BYTES + 10) + b'"}',
    "binary": bytes(range(256)) * 64,
    "trailing-nul": b"{\"a\": 1}\x00",
    "huge-int": b'{"n": ' + b"9" * 10_000 + b"}",
}


@pytest.fixture
def template(tmp_path: Path) -> Path:
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    (tpl / "settings.json").write_text('{"telemetry": false}\n')
    return tpl


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_settings_are_set_aside_with_one_line(tmp_path: Path, template: Path,
                                                      name: str) -> None:
    """The file is moved aside byte for byte, the template's copy takes its place, and one
    warning line says why."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "settings.json").write_bytes(HOSTILE[name])
    report = prepare(home, template)
    [aside] = sorted(home.glob("settings.json.invalid-*"))
    assert aside.read_bytes() == HOSTILE[name]
    assert json.loads((home / "settings.json").read_text()) == {"telemetry": False}
    [warning] = [w for w in report.warnings if "settings.json" in w]
    assert "\n" not in warning and len(warning) < 600


def test_nesting_at_the_limit_is_merged(tmp_path: Path, template: Path) -> None:
    """A file exactly MAX_DEPTH deep is the user's and is merged, not set aside."""
    home = tmp_path / "home"
    home.mkdir()
    deep = b'{"a":' * (MAX_DEPTH - 1) + b"{}" + b"}" * (MAX_DEPTH - 1)
    (home / "settings.json").write_bytes(deep)
    prepare(home, template)
    assert not list(home.glob("settings.json.invalid-*"))
    assert json.loads((home / "settings.json").read_bytes())["telemetry"] is False


def test_a_lone_surrogate_is_merged_and_stays_readable(tmp_path: Path, template: Path) -> None:
    """"\\ud800" is valid JSON text but not UTF-8: the merged file keeps it as an escape."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "settings.json").write_text('{"x": "\\ud800"}')
    prepare(home, template)
    assert json.loads((home / "settings.json").read_bytes()) == {"x": "\ud800",
                                                                 "telemetry": False}


def test_the_command_line_says_one_line_and_exits_0(tmp_path: Path, template: Path) -> None:
    """`python -m coditect_init` on the 500-deep file: exit 0, one warning, no traceback."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "settings.json").write_bytes(HOSTILE["nested-500"])
    done = subprocess.run([sys.executable, "-m", "coditect_init", "--home", str(home),
                           "--template", str(template)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"nested deeper than {MAX_DEPTH} levels" in done.stderr
