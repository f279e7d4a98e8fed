"""The distribution as the image gets it: a wheel built from a copy of the sources, installed
into a fresh virtual environment outside the checkout, its console scripts run from elsewhere.
Proof that the packaged catalogue and commands work without the source tree.

Built once for the module (≈10 s). Without the network: the dependencies and the build backend
come from the wheelhouse that scripts/bootstrap fills outside the checkout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT

BUILD_DEADLINE = 300
RUN_DEADLINE = 60

# What only the pod image or the cluster provides: the Rust binaries and Theia come from the
# image's build stage, the API's secrets from the StatefulSet. Nothing else may be missing.
IMAGE_OR_CLUSTER = (
    "'/usr/local/bin/codi2' is not an executable file",
    "'/usr/local/bin/coditect-v5-api' is not an executable file",
    "'/usr/local/bin/file-monitor' is not an executable file",
    "directory: '/app/theia' is not a directory",
    "'node' is not an executable file on PATH",  # Theia's runtime, where Node is not installed
    "requires_env: JWT_SECRET is not set",
    "requires_env: FDB_CLUSTER_FILE is not set",
)

pytestmark = pytest.mark.timeout(BUILD_DEADLINE + 4 * RUN_DEADLINE)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    work: Path  # the working directory of every command: outside the checkout
    build_log: str  # what the build backend said (pip wheel -v)

    def run(self, *argv: str,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """An installed console script, with an environment that names nothing of the checkout
        (nginx is in /usr/sbin on Debian)."""
        environment = {"PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/sbin:/usr/bin:/bin",
                       "HOME": str(self.work), "LANG": "C.UTF-8", **(env or {})}
        return subprocess.run([str(self.venv / "bin" / argv[0]), *argv[1:]], cwd=self.work,
                              env=environment, capture_output=True, text=True,
                              timeout=RUN_DEADLINE, check=False)


def wheelhouse() -> Path:
    """Where scripts/bootstrap put the wheels this pyproject.toml needs."""
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = cache / "coditect-pod" / f"wheelhouse-{key}"
    assert path.is_dir(), f"no wheelhouse at {path}: run scripts/bootstrap (make test does)"
    return path


def step(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=BUILD_DEADLINE,
                          check=False, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def source_copy(target: Path) -> Path:
    """What the image's build context gives pip (deploy/Dockerfile): pyproject.toml, README.md
    and the package directories, without bytecode. Built there, so the checkout gets no
    build/ or *.egg-info of this test's."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    target.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, target / name)
    for package in setuptools["packages"]:
        if "." in package:
            continue  # a subpackage (start.catalogue) comes with its parent's directory
        directory = setuptools["package-dir"].get(package, package)
        shutil.copytree(ROOT / directory, target / directory,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    assert ROOT not in base.parents
    source = source_copy(base / "source")
    dist = base / "dist"
    offline = ["--no-index", "--find-links", str(wheelhouse())]
    # -v: the build backend's own output, where setuptools says what it deprecates.
    build_log = step([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", *offline, "-w",
                      str(dist), str(source)], base)
    (wheel,) = dist.glob("coditect_pod-*.whl")
    venv = base / "venv"
    # A venv of its own without pip of its own (faster); this pip installs into it.
    step([sys.executable, "-m", "venv", "--without-pip", str(venv)], base)
    step([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
          *offline, str(wheel)], base)
    work = base / "elsewhere"
    work.mkdir()
    return Installed(wheel, venv, work, build_log)


def test_wheel_holds_the_catalogue_under_its_own_name(installed: Installed) -> None:
    """The catalogue is package data of `coditect_pod_catalogue`; nothing lands in a
    `supervisor/` package, which belongs to the supervisor library."""
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert "coditect_pod_catalogue/supervisord.conf" in names
    conf_d = {Path(n).name for n in names if n.startswith("coditect_pod_catalogue/conf.d/")}
    assert conf_d == {p.name for p in (ROOT / "supervisor" / "conf.d").glob("*.conf")}
    assert not [n for n in names if n.startswith("supervisor/")]


def test_the_build_is_warning_free_and_the_licence_an_spdx_expression(
    installed: Installed,
) -> None:
    """setuptools (the wheelhouse's, the newest that bootstrap found) builds it without a
    deprecation (a `license` table stops building in 2027), and the wheel carries the
    licence as a PEP 639 expression and its file."""
    assert "setuptools" in installed.build_log  # the backend's output was captured
    assert "Deprecat" not in installed.build_log, [
        line for line in installed.build_log.splitlines() if "Deprecat" in line]
    wheel = zipfile.ZipFile(installed.wheel)
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    headers = wheel.read(metadata).decode().split("\n\n", 1)[0].splitlines()
    assert "License-Expression: LicenseRef-Proprietary" in headers
    assert "License-File: LICENSE" in headers
    assert not [h for h in headers if h.startswith("License:")]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel.namelist())


def test_help_says_what_each_flag_is_for_and_its_default(installed: Installed) -> None:
    """Every flag has help text; the defaults are stated, the default catalogue's place is
    the installed package's, and the catalogue's reference is named by a command."""
    done = installed.run("coditect-start", "--help", env={"COLUMNS": "1000"})  # no wrapping
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for flag, default in (("--home DIR", "/app/.coditect"), ("--run-dir DIR", "/run/coditect"),
                          ("--template DIR", "nothing seeded"),
                          ("--health-addr HOST:PORT", "0.0.0.0:8081"),
                          ("--drain-timeout SECONDS", "(default: 25)")):
        assert f"{flag} " in text and default in text.split(flag, 2)[-1][:400], flag
    site = installed.venv / "lib"
    shown = text.split("installed with this package, ", 1)[1].split()[0]
    assert site in Path(shown).parents and (Path(shown) / "supervisord.conf").is_file()
    assert "coditect-start --help-catalogue" in text


def test_help_catalogue_prints_the_reference_from_the_wheel(installed: Installed) -> None:
    """`coditect-start --help-catalogue` prints docs/CATALOGUE.md, shipped as package data:
    what the messages point at is there without the repository or a network."""
    assert "coditect_pod_docs/CATALOGUE.md" in zipfile.ZipFile(installed.wheel).namelist()
    done = installed.run("coditect-start", "--help-catalogue")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (ROOT / "docs" / "CATALOGUE.md").read_text()


def test_console_scripts_are_installed(installed: Installed) -> None:
    """Every [project.scripts] command exists in the venv and answers --help."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in scripts:
        done = installed.run(name, "--help")
        assert done.returncode == 0, f"{name} --help: {done.stderr}"
        assert str(ROOT) not in done.stdout + done.stderr


def test_check_passes_against_the_demo_catalogue(installed: Installed) -> None:
    """`coditect-start --check` with the packaged catalogue and a copy of the demo's overlay
    (stand-ins, nginx config, frontend) outside the checkout: valid, five services."""
    demo = installed.work / "demo"
    if not demo.exists():
        shutil.copytree(ROOT / "demo", demo, ignore=shutil.ignore_patterns("__pycache__"))
    env = {"JWT_SECRET": "demo-only-not-a-secret", "FDB_CLUSTER_FILE": str(demo / "fdb.cluster"),
           "CODITECT_HOME": str(installed.work / "home"),
           "CODITECT_RUN": str(installed.work / "run"),
           "CODITECT_WORKSPACE": str(installed.work)}
    done = installed.run("coditect-start", "--check", "--overlay", str(demo / "overlay.conf"),
                         env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "catalogue valid: 5 services (theia, coditect-v5-api, codi2, nginx, file-monitor)")
    assert str(ROOT) not in done.stdout + done.stderr


def test_check_of_the_production_catalogue_misses_only_the_image_and_the_cluster(
    installed: Installed,
) -> None:
    """The shipped production catalogue, read from the installed package: its only findings are
    what the image's build stage and the StatefulSet provide, each in a file of the installed
    package, none in the checkout."""
    done = installed.run("coditect-start", "--check")
    assert done.returncode == 78, done.stdout + done.stderr
    *findings, summary = done.stderr.splitlines()
    assert summary.startswith("coditect-start: catalogue invalid")
    site = installed.venv / "lib"
    for line in findings:
        path = line.removeprefix("coditect-start: ").split(":", 1)[0]
        assert site in Path(path).parents, line
        assert any(allowed in line for allowed in IMAGE_OR_CLUSTER), line
    for secret in ("JWT_SECRET", "FDB_CLUSTER_FILE"):
        assert any(f"requires_env: {secret} is not set" in line for line in findings)
