"""`[task:NAME]`: one-shot tasks against a real pod (real processes, signals, socket and port).

A task runs to completion before what names it in `after` starts; a failed one (an exit other
than 0, a timeout, its retries used up) holds its dependents back and the pod says so; a
`once=volume` task runs once per $CODITECT_HOME, until its command changes. The pod's own
seeding of $CODITECT_HOME is listed as the first task."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from start.catalogue import load
from start.errors import ConfigError
from start.taskstamp import identity, stamp_path
from tests.demo_support import podctl_command
from tests.support import ROOT, RunningPod, get, pid_alive, wait_for

DEADLINE = 20.0
SERVICE = "[program:api]\ncommand=sleep 1000\nstartsecs=0\nstopwaitsecs=3\n"


def write(directory: Path, **sections: str) -> Path:
    """A catalogue directory: supervisord.conf including one file per named section text."""
    (directory / "conf.d").mkdir(parents=True, exist_ok=True)
    (directory / "supervisord.conf").write_text(
        "[supervisord]\nnodaemon=true\n\n[include]\nfiles = conf.d/*.conf\n")
    for name, text in sections.items():
        (directory / "conf.d" / f"{name}.conf").write_text(text)
    return directory


def task(name: str, command: str, **keys: str) -> str:
    return f"[task:{name}]\ncommand={command}\n" + "".join(f"{k}={v}\n" for k, v in keys.items())


def api_after(*names: str) -> str:
    return SERVICE + f"\n[health:api]\nafter={','.join(names)}\n"


class Pod:
    """A running pod, its socket and its port."""

    def __init__(self, running: RunningPod, home: Path) -> None:
        self.running = running
        self.home = home
        self.socket = running.run_dir / "podctl.sock"

    def podctl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
        return subprocess.run([*podctl_command(), "--socket", str(self.socket), *argv],
                              capture_output=True, text=True, env=environment, cwd=ROOT,
                              timeout=DEADLINE, check=False)

    def status(self) -> list[dict[str, Any]]:
        services: list[dict[str, Any]] = json.loads(
            self.podctl("status", "--json").stdout)["services"]
        return services

    def of(self, name: str) -> dict[str, Any]:
        return next(s for s in self.status() if s["name"] == name)

    def get(self, path: str) -> tuple[int, str]:
        return get(self.running.health_port, path)


@contextlib.contextmanager
def running_pod(catalogue: Path, home: Path) -> Iterator[Pod]:
    running = RunningPod(catalogue, home)
    pod = Pod(running, home)
    try:
        running.wait_event("health_listening", DEADLINE)
        yield pod
    finally:
        running.stop()


def spawned_after(pod: Pod, first: str, then: str) -> bool:
    """`then` was spawned only after `first` succeeded (in the one ordered event stream)."""
    names = [(line.get("event"), line.get("service")) for line in pod.running.events()]
    return names.index(("task_succeeded", first)) < names.index(("spawned", then))


# -- order and success ------------------------------------------------------------------------


def test_a_service_after_a_task_starts_once_the_task_succeeded(tmp_path: Path) -> None:
    """The task runs first, with its output in its own log and on stdout; the service waits
    for its exit 0 (it finds the file the task wrote); both are listed, the task as done."""
    marker = tmp_path / "seeded"
    catalogue = write(tmp_path / "catalogue",
                      seed=task("seed", f"sh -c 'sleep 0.5; echo seeding; touch {marker}'"),
                      api=SERVICE.replace("sleep 1000", f"sh -c 'test -e {marker} && exec "
                                          "sleep 1000'") + "\n[health:api]\nafter=seed\n")
    with running_pod(catalogue, tmp_path / "home") as pod:
        pod.running.wait_event("spawned", DEADLINE, service="api")
        assert spawned_after(pod, "seed", "api")
        wait_for(lambda: pod.of("api")["state"] == "running", DEADLINE, "api running")
        seed = pod.of("seed")
        assert (seed["state"], seed["ready"], seed["kind"], seed["last_exit_code"]) == (
            "exited", True, "task", 0)
        assert pod.of("api")["restarts"] == 0  # it never ran before the file was there
        log = tmp_path / "home" / "logs" / "seed.log"
        wait_for(lambda: log.exists() and "seeding" in log.read_text(), DEADLINE, "seed.log")
        assert pod.running.events(None, service="seed", stream="stdout", message="seeding")
        assert pod.get("/startupz")[0] == 200
        assert pod.get("/readyz")[0] == 200
        metrics = pod.get("/metrics")[1]
        assert 'coditect_pod_service_ready{service="seed"} 1.0' in metrics


def test_status_lists_the_seeding_of_the_home_first_and_tasks_by_kind(tmp_path: Path) -> None:
    """`podctl status`: coditect-home first, a task with KIND task (the seeding beside the
    services in /v1/status); `podctl status seed` exits 0 for a task that succeeded (done,
    not running)."""
    catalogue = write(tmp_path / "catalogue", seed=task("seed", "true"), api=api_after("seed"))
    with running_pod(catalogue, tmp_path / "home") as pod:
        wait_for(lambda: pod.of("api")["state"] == "running", DEADLINE, "api running")
        table = pod.podctl("status").stdout.splitlines()
        assert table[0].split()[-1] == "KIND", table
        assert table[1].split()[0] == "coditect-home" and table[1].split()[-1] == "task", table
        kinds = {line.split()[0]: line.split()[-1] for line in table[1:]}
        assert kinds == {"coditect-home": "task", "seed": "task", "api": "catalogue"}, table
        document = json.loads(pod.podctl("status", "--json").stdout)
        home = document["seeding"]
        assert (home["name"], home["kind"], home["state"], home["ready"], home["critical"]) == (
            "coditect-home", "task", "exited", True, False)
        assert "coditect-home" not in {s["name"] for s in document["services"]}
        assert pod.podctl("status", "seed").returncode == 0


# -- failure ----------------------------------------------------------------------------------


def test_a_failed_task_holds_its_dependents_back_and_startupz_names_them(
        tmp_path: Path) -> None:
    """Retried `retries` times, then failed for good: the service after it (and the one after
    that) is never spawned, with a reason that says why; /startupz is 503 naming them, with
    no reason or command line on the public port; /health fails."""
    catalogue = write(tmp_path / "catalogue",
                      seed=task("seed", "sh -c 'echo secret-token-xyz >&2; exit 3'",
                                retries="1"),
                      api=api_after("seed"),
                      web=SERVICE.replace("program:api", "program:web")
                      + "\n[health:web]\nafter=api\n")
    with running_pod(catalogue, tmp_path / "home") as pod:
        failed = pod.running.wait_event("task_failed", DEADLINE, service="seed")[0]
        assert failed["exit_code"] == 3
        pod.running.wait_event("dependency_failed", DEADLINE, service="web")
        assert len(pod.running.events("spawned", service="seed")) == 2  # 1 + retries
        assert not pod.running.events("spawned", service="api")
        assert not pod.running.events("spawned", service="web")
        seed, api = pod.of("seed"), pod.of("api")
        assert (seed["state"], seed["last_exit_code"], seed["failed"]) == ("fatal", 3, True)
        assert "failed 2 times" in seed["reason"], seed
        assert (api["state"], api["pid"], api["failed"]) == ("fatal", None, True)
        assert api["reason"] == "not started: seed failed (exit 3)", api
        assert pod.of("web")["reason"] == "not started: api not started"
        status, body = pod.get("/startupz")
        assert status == 503
        assert "[-]seed failed: reason withheld" in body, body
        assert "[-]api failed: reason withheld" in body, body
        assert "secret-token" not in body and "exit 3" not in body
        status, body = pod.get("/health")
        assert status == 503 and json.loads(body)["status"] == "fail"
        assert "secret-token" not in body and "sh -c" not in body
        listed = pod.podctl("status")
        assert listed.returncode == 3, listed.stderr
        assert "podctl: api: not started: seed failed (exit 3)" in listed.stderr.splitlines()


def test_a_task_past_its_timeout_is_killed_with_what_escaped_its_group(
        tmp_path: Path) -> None:
    """timeout=1s: the task's group and a process it moved to a session of its own (carrying
    its run's mark) are killed; the task failed with the timeout as its reason."""
    escapee = tmp_path / "escapee.pid"
    command = f"sh -c 'setsid sleep 1000 & echo $! > {escapee}; exec sleep 1000'"
    catalogue = write(tmp_path / "catalogue", seed=task("seed", command, timeout="1s"),
                      api=api_after("seed"))
    try:
        with running_pod(catalogue, tmp_path / "home") as pod:
            wait_for(lambda: escapee.exists() and escapee.read_text().strip(), DEADLINE,
                     "the escapee's pid")
            pid = int(escapee.read_text())
            pod.running.wait_event("task_timed_out", DEADLINE, service="seed", seconds=1.0)
            failed = pod.running.wait_event("task_failed", DEADLINE, service="seed")[0]
            assert failed["reason"].startswith("timed out after 1s"), failed
            wait_for(lambda: not pid_alive(pid), DEADLINE, "the escapee killed")
            assert pod.of("api")["state"] == "fatal"
            assert not pod.running.events("spawned", service="api")
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(escapee.read_text()), signal.SIGKILL)


# -- once=volume ------------------------------------------------------------------------------


def test_a_once_volume_task_runs_once_per_home_until_its_command_changes(
        tmp_path: Path) -> None:
    """The first boot runs it and writes its stamp; the second skips it (and its dependent
    starts at once); a changed command runs again."""
    runs = tmp_path / "runs"
    home = tmp_path / "home"

    def boot(word: str) -> list[dict[str, Any]]:
        catalogue = write(tmp_path / "catalogue",
                          seed=task("seed", f"sh -c 'echo {word} >> {runs}'", once="volume"),
                          api=api_after("seed"))
        with running_pod(catalogue, home) as pod:
            wait_for(lambda: pod.of("api")["state"] == "running", DEADLINE, "api running")
            assert pod.of("seed")["ready"]
            return pod.running.events()

    first = boot("one")
    assert [e for e in first if e.get("event") == "task_succeeded"]
    spec = load(tmp_path / "catalogue").get("seed")
    assert spec is not None
    stamp = stamp_path(home, "seed")
    assert stamp.read_text().strip() == identity(spec)
    assert identity(spec).startswith("sha256:")

    second = boot("one")
    assert [e for e in second if e.get("event") == "task_skipped"]
    assert not [e for e in second if e.get("event") == "spawned" and e["service"] == "seed"]
    assert runs.read_text().split() == ["one"]

    boot("two")
    assert runs.read_text().split() == ["one", "two"]


# -- the section ------------------------------------------------------------------------------


def test_bad_task_sections_are_reported_one_line_each(tmp_path: Path) -> None:
    """Unknown keys (with a guess), a bad `once`, `retries` and `timeout`, a missing command
    and the seeding's reserved name: each a line naming the section and key."""
    catalogue = write(tmp_path / "catalogue", api=SERVICE,
                      a=task("a", "true", onse="volume"),
                      b=task("b", "true", once="always", retries="-1", timeout="soon"),
                      c="[task:c]\ndirectory=/\n",
                      d=task("coditect-home", "true"))
    with pytest.raises(ConfigError) as raised:
        load(catalogue)
    text = "\n".join(raised.value.problems)
    assert "[task:a] onse: unknown key; did you mean 'once'?" in text, text
    assert "[task:b] once: 'always'" in text, text
    assert "[task:b] retries:" in text and "[task:b] timeout:" in text, text
    assert "[task:c] command: missing" in text, text
    assert "'coditect-home' is the pod's own seeding" in text, text


def test_a_task_is_a_spec_with_its_keys(tmp_path: Path) -> None:
    """What a good section means: never restarted, retries as startretries, the timeout and
    once kept, `after` resolved like a service's, critical by default."""
    catalogue = write(tmp_path / "catalogue", api=api_after("seed"),
                      seed=task("seed", "true", retries="2", timeout="1m", once="volume",
                                environment="A=1", directory="/", after="first"),
                      first=task("first", "true", critical="false"))
    loaded = load(catalogue)
    seed = loaded.get("seed")
    assert seed is not None and seed.task is not None
    assert (seed.autorestart, seed.startretries, seed.task.timeout, seed.task.once) == (
        "false", 2, 60.0, "volume")
    assert seed.after == ("first",) and ("A", "1") in seed.environment
    assert seed.health.critical
    first = loaded.get("first")
    assert first is not None and not first.health.critical
