"""`[health:NAME] secrets=`: a secret reaches only the services that name it (and their exec
probes), read from /proc/PID/environ of real children; every way it could leak otherwise is
refused before anything starts."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from start.catalogue import load as load_catalogue
from start.catalogue.cache import CatalogueCache
from start.errors import ConfigError
from tests.demo_support import SERVICES, podctl_command, running_demo
from tests.support import PYTHON, ROOT, RunningPod, wait_for, write_catalogue

SECRET = "s3cr3t-only-for-the-api"
ENVIRON = {"PATH": "/usr/bin:/bin", "HOME": "/root", "TOKEN": SECRET, "PLAIN": "everyone"}
ENVIRON_WITHOUT_TOKEN = {k: v for k, v in ENVIRON.items() if k != "TOKEN"}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(): v.decode("utf-8", "replace") for k, _, v in pairs}


def problems(location: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_catalogue(location, environ=environ or ENVIRON)
    return caught.value.problems


def two_services(tmp_path: Path, api: dict[str, str] | None = None,
                 other: dict[str, str] | None = None,
                 other_health: dict[str, str] | None = None) -> Path:
    return write_catalogue(tmp_path / "cat", {
        "api": {"command": "/bin/sleep 1000", **(api or {})},
        "other": {"command": "/bin/sleep 1000", **(other or {})},
    }, {"api": {"secrets": "TOKEN"}, **({"other": other_health} if other_health else {})})


def test_a_secret_is_withheld_from_every_service_that_does_not_name_it(tmp_path: Path) -> None:
    catalogue = load_catalogue(two_services(tmp_path), environ=ENVIRON)
    assert catalogue.secret_names == {"TOKEN"}
    assert catalogue.get("api").withheld == ()  # type: ignore[union-attr]
    assert catalogue.get("other").withheld == ("TOKEN",)  # type: ignore[union-attr]


@pytest.mark.parametrize(("where", "key"), [
    ({"other": {"command": "/bin/sleep 1000 --token=%(ENV_TOKEN)s"}}, "[program:other] command"),
    ({"api": {"command": "/bin/sleep 1000 --token=%(ENV_TOKEN)s"}}, "[program:api] command"),
    ({"other": {"environment": 'KEY="%(ENV_TOKEN)s"'}}, "[program:other] environment"),
])
def test_expanding_a_secret_where_it_would_leak_is_refused(
        tmp_path: Path, where: dict[str, dict[str, str]], key: str) -> None:
    found = problems(two_services(tmp_path, api=where.get("api"), other=where.get("other")))
    assert len(found) == 1, found
    assert key in found[0]
    assert "%(ENV_TOKEN)s: TOKEN is a secret ([health:api] secrets=)" in found[0]
    assert SECRET not in found[0]


def test_a_secret_in_an_exec_probe_is_refused(tmp_path: Path) -> None:
    found = problems(two_services(tmp_path, other_health={
        "ready": "exec:/bin/echo %(ENV_TOKEN)s"}))
    assert len(found) == 1 and "[health:other] ready" in found[0], found
    assert "/proc/PID/cmdline" in found[0]


def test_the_service_that_names_it_may_take_it_under_another_name(tmp_path: Path) -> None:
    catalogue = load_catalogue(two_services(tmp_path, api={
        "environment": 'API_TOKEN="%(ENV_TOKEN)s"'}), environ=ENVIRON)
    assert dict(catalogue.get("api").environment)["API_TOKEN"] == SECRET  # type: ignore[union-attr]


def test_requiring_a_secret_one_is_not_given_is_refused(tmp_path: Path) -> None:
    found = problems(two_services(tmp_path, other_health={"requires_env": "TOKEN, PLAIN"}))
    assert found == [f"{tmp_path}/cat/conf.d/other.conf:5: [health:other] requires_env: TOKEN "
                     "is a secret ([health:api] secrets=) that this service is not given; add "
                     "it to this service's secrets= or remove it from requires_env"]


def test_the_check_command_reports_it_in_one_line(tmp_path: Path) -> None:
    location = two_services(tmp_path, other={"command": "/bin/sleep %(ENV_TOKEN)s"})
    done = subprocess.run([PYTHON, "-m", "start", "--check", "--catalogue", str(location)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                          env={**ENVIRON, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 78, done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stderr
    assert "[program:other] command: %(ENV_TOKEN)s: TOKEN is a secret" in done.stderr


def test_a_check_where_the_pod_withheld_a_secret_takes_it_as_set(tmp_path: Path) -> None:
    """`podctl validate` in an IDE terminal: the pod withheld the secret from it, and said so."""
    location = two_services(tmp_path, other_health={"requires_env": "PLAIN"})
    (location / "conf.d" / "api.conf").write_text(
        (location / "conf.d" / "api.conf").read_text() + "requires_env=TOKEN\n")
    without = {k: v for k, v in ENVIRON.items() if k != "TOKEN"}
    command = [PYTHON, "-m", "start", "--check", "--catalogue", str(location)]

    def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60,
                              check=False, env={**env, "PYTHONPATH": str(ROOT)})

    assert check(without).returncode == 78  # a shell the pod did not start: it is missing
    done = check({**without, "CODITECT_WITHHELD": "TOKEN"})
    assert done.returncode == 0, done.stderr
    assert "note: TOKEN: withheld from this environment by the pod (secrets=), taken as set" \
        in done.stdout


def test_the_cache_holds_no_secret(tmp_path: Path) -> None:
    location = two_services(tmp_path, api={"environment": 'API_TOKEN="%(ENV_TOKEN)s"'})
    catalogue = load_catalogue(location, environ=ENVIRON)
    (tmp_path / "run").mkdir()
    cache = CatalogueCache(tmp_path / "run", location, None, ENVIRON)
    assert cache.store(catalogue) is None
    assert SECRET.encode() not in cache.path.read_bytes()
    loaded = CatalogueCache(tmp_path / "run", location, None, ENVIRON).load()
    assert loaded is not None and loaded.services == catalogue.services


def test_children_and_exec_probes_get_only_the_secrets_they_name(tmp_path: Path) -> None:
    """A real engine: each service's process and its exec probe write down what they got."""
    seen = tmp_path / "seen"
    seen.mkdir()

    def probe(name: str) -> str:
        return f"exec:/bin/sh -c 'env > {seen}/{name}.env'"

    location = write_catalogue(tmp_path / "cat", {
        "api": {"command": "/bin/sleep 1000"},
        "other": {"command": "/bin/sleep 1000"},
    }, {"api": {"secrets": "TOKEN", "ready": probe("api"), "interval": "200ms"},
        "other": {"ready": probe("other"), "interval": "200ms"}})
    # [supervisord] environment setting it too: still withheld from `other`.
    conf = location / "supervisord.conf"
    conf.write_text(conf.read_text().replace("nodaemon=true", "nodaemon=true\n"
                                             "environment=TOKEN=\"also-secret\""))
    pod = RunningPod(location, tmp_path / "home", env={"TOKEN": SECRET, "PLAIN": "everyone"})
    try:
        pod.wait_event("ready", service="api", timeout=20)
        pod.wait_event("ready", service="other", timeout=20)
        pids = {e["service"]: e["pid"] for e in pod.events("spawned")}
        api, other = environ_of(pids["api"]), environ_of(pids["other"])
        assert api["TOKEN"] == "also-secret" and api["PLAIN"] == "everyone"
        assert "TOKEN" not in other and other["PLAIN"] == "everyone"
        api_probe = wait_for(lambda: (seen / "api.env").read_text() or None, 10, "api probe")
        other_probe = wait_for(lambda: (seen / "other.env").read_text() or None, 10, "probe")
        assert f"TOKEN={SECRET}" in api_probe
        assert "TOKEN=" not in other_probe and "PLAIN=everyone" in other_probe
    finally:
        pod.stop()


def test_in_the_demo_pod_only_the_api_has_the_jwt_secret(tmp_path: Path) -> None:
    """Every process of the demo pod (the stand-ins, the file monitor, Theia's slot and whatever
    it runs) but the API, read from /proc/PID/environ. nginx writes its process title over its
    environment, so /proc no longer shows what it was given: it is left out, not misread."""
    secret = "demo-jwt-" + tmp_path.name
    with running_demo("secrets-", env={"JWT_SECRET": secret}) as demo:
        demo.pod.wait_event("health_listening", 20)  # its own faces, the control socket too
        demo.wait_running("theia", "coditect-v5-api", "codi2", "nginx")
        api = demo.pid("coditect-v5-api")
        readable = 0
        for child in psutil.Process(demo.pod.engine_pid).children(recursive=True):
            environ = environ_of(child.pid)
            if "PATH" not in environ:  # a process title written over it (nginx)
                continue
            readable += 1
            is_api = child.pid == api or api in {p.pid for p in child.parents()}
            assert (environ.get("JWT_SECRET") == secret) == is_api, (child.pid, child.cmdline())
            assert "FDB_CLUSTER_FILE" in environ  # not a secret: passes as today
            assert environ.get("CODITECT_WITHHELD") == (None if is_api else "JWT_SECRET")
        assert readable >= len(SERVICES) - 1  # every service but nginx
        # A terminal's `podctl validate` (Theia's environment) still finds the catalogue valid.
        terminal = {**environ_of(demo.pid("theia")), "NO_COLOR": "1",
                    "CODITECT_CATALOGUE_OVERLAY": str(ROOT / "demo" / "overlay.conf")}
        done = subprocess.run([*podctl_command(), "validate", str(ROOT / "supervisor")],
                              capture_output=True, text=True, env=terminal, cwd=tmp_path,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "JWT_SECRET: withheld from this environment" in done.stdout


def test_a_transient_service_is_not_given_the_pods_secrets(tmp_path: Path) -> None:
    """`podctl run` from a terminal: the pod's secret is withheld from what it starts; a value
    the request gives itself with --env is its own."""
    location = two_services(tmp_path)
    pod = RunningPod(location, tmp_path / "home", env={"TOKEN": SECRET})
    socket = pod.run_dir / "podctl.sock"
    try:
        pod.wait_event("spawned", 20, service="api")
        wait_for(socket.exists, 20, "the control socket")
        for name, extra in (("plain", []), ("own", ["--env", "TOKEN=mine"])):
            done = subprocess.run(
                [*podctl_command(), "--socket", str(socket), "run", name, *extra, "--",
                 "/bin/sleep", "1000"], capture_output=True, text=True, cwd=tmp_path,
                timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert done.returncode == 0, done.stderr
        pids = {e["service"]: e["pid"] for e in pod.events("spawned")}
        assert "TOKEN" not in environ_of(pids["plain"])
        assert environ_of(pids["plain"])["CODITECT_WITHHELD"] == "TOKEN"
        assert environ_of(pids["own"])["TOKEN"] == "mine"
        assert environ_of(pids["api"])["TOKEN"] == SECRET
    finally:
        pod.stop()


def test_a_reload_and_the_pods_own_check_still_see_the_secret(tmp_path: Path) -> None:
    """PID 1's os.environ holds no secret; a reload's parse and `GET /v1/check` (podctl
    validate against the pod) are given the environment it started with, so `requires_env`
    passes there as it did at the boot."""
    location = two_services(tmp_path)
    api = location / "conf.d" / "api.conf"
    api.write_text(api.read_text() + "requires_env=TOKEN\n")
    pod = RunningPod(location, tmp_path / "home", env={"TOKEN": SECRET})
    socket = pod.run_dir / "podctl.sock"
    try:
        pod.wait_event("health_listening", 20)
        api.write_text(api.read_text().replace("/bin/sleep 1000", "/bin/sleep 1001"))
        pod.signal(signal.SIGHUP)
        pod.wait_event("reloaded", 30)
        assert not pod.events("reload_rejected"), pod.tail()
        done = subprocess.run([*podctl_command(), "--socket", str(socket), "validate"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=90,
                              check=False, env={**ENVIRON_WITHOUT_TOKEN, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stdout + done.stderr
        assert SECRET not in done.stdout + done.stderr
    finally:
        pod.stop()
