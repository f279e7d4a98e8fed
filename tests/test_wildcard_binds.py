"""A command that binds a wildcard address without `public=true` is warned about by
`coditect-start --check` (and so `podctl doctor`, tests/test_podctl_doctor.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from start.catalogue import load as load_catalogue
from start.catalogue.exposure import exposure_warnings, wildcard_binds
from tests.support import PYTHON, ROOT


@pytest.mark.parametrize(("argv", "found"), [
    (["app", "--host", "0.0.0.0"], ["--host 0.0.0.0"]),
    (["node", "main.js", "--hostname=0.0.0.0", "--port=3000"], ["--hostname=0.0.0.0"]),
    (["gunicorn", "--bind", "0.0.0.0:8080", "app"], ["--bind 0.0.0.0:8080"]),
    (["nc", "-l", "0.0.0.0", "9000"], ["-l 0.0.0.0"]),
    (["srv", "-l", "::"], ["-l ::"]),
    (["srv", "--listen", "[::]:80"], ["--listen [::]:80"]),
    (["srv", "--url", "http://0.0.0.0:8000/"], ["--url http://0.0.0.0:8000/"]),
    (["sh", "-c", "exec srv --host '0.0.0.0' --port 1"], ["--host 0.0.0.0"]),
    (["srv", "0.0.0.0:9000"], ["0.0.0.0:9000"]),
])
def test_wildcard_binds_are_found(argv: list[str], found: list[str]) -> None:
    assert wildcard_binds(argv) == found


@pytest.mark.parametrize("argv", [
    ["node", "main.js", "--hostname=127.0.0.1", "--port=3000"],
    ["codi2", "server", "--host", "127.0.0.1", "--port", "8765"],
    ["srv", "--bind", "[::1]:80"], ["srv", "-l", "::1"], ["srv", "10.0.0.0"],
    ["srv", "--route", "0.0.0.0/0"], ["echo", "std::vector"],
    ["sh", "-c", 'exec nginx -p "$d/" -g "daemon off;"'],
])
def test_loopback_and_lookalikes_are_not(argv: list[str]) -> None:
    assert wildcard_binds(argv) == []


def check(location: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "start", "--check", "--catalogue", str(location)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_check_warns_once_per_program_and_not_for_a_door(tmp_path: Path) -> None:
    catalogue = tmp_path / "pod.conf"
    catalogue.write_text(
        "[program:api]\ncommand=/bin/sleep 100 --host 0.0.0.0\nnumprocs=2\n"
        "process_name=%(program_name)s_%(process_num)s\n"
        "[program:door]\ncommand=/bin/sleep 100 --bind [::]:80\n"
        "[health:door]\npublic=true\n"
        "[program:quiet]\ncommand=/bin/sleep 100 --host 127.0.0.1\n")
    done = check(catalogue)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: [program:api] command binds a wildcard address (--host 0.0.0.0): every pod "
        "of the cluster can reach it, not only through nginx; bind 127.0.0.1, or if it is "
        "meant to be a door set public=true in [health:api]"]


def test_public_must_be_a_boolean(tmp_path: Path) -> None:
    catalogue = tmp_path / "pod.conf"
    catalogue.write_text("[program:door]\ncommand=/bin/sleep 100\n[health:door]\npublic=maybe\n")
    done = check(catalogue)
    assert done.returncode == 78
    assert "[health:door] public: 'maybe' is not a boolean" in done.stderr


def test_the_production_catalogue_opens_no_second_door() -> None:
    environ = {**os.environ, "JWT_SECRET": "x", "FDB_CLUSTER_FILE": "/dev/null",
               "CODITECT_WORKSPACE": "/workspace", "CODITECT_HOME": "/app/.coditect"}
    for overlay in (None, ROOT / "demo" / "overlay.conf"):
        catalogue = load_catalogue(ROOT / "supervisor", overlay=overlay, environ=environ,
                                   check_executables=False)
        assert exposure_warnings(catalogue.services) == []
