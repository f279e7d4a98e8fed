"""A number written in other than ASCII digits (a full-width 15, an Arabic-Indic 15) is refused
with a clear message wherever a person writes one: catalogue durations and program keys, probe
URLs, the control API's ?signal=, podctl's and coditect-start's flags, the file monitor's.
int(), float(), str.isdigit() and re's \\d would all read them as 15."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coditect_file_monitor import metrics as monitor_metrics
from coditect_file_monitor.cli import build_parser as monitor_parser
from healthz.durations import parse_duration
from healthz.podctl import main as podctl
from healthz.probe_spec import parse_probe
from healthz.server import parse_addr
from healthz.spec import parse_health_section
from start.catalogue import load as load_catalogue
from start.errors import ConfigError
from tests.health_support import FakePod, default_pod_services, running_faces
from tests.support import PYTHON, ROOT, write_catalogue

FULL_WIDTH_15 = "\uff11\uff15"
ARABIC_INDIC_15 = "\u0661\u0665"
MIXED_15 = "1\uff15"
FOREIGN = (FULL_WIDTH_15, ARABIC_INDIC_15, MIXED_15)
ASCII_ONLY = "write numbers with the ASCII digits 0-9"


def test_python_would_read_them_as_numbers() -> None:
    """Why the rule is needed: what the tests below refuse, Python itself accepts."""
    assert {int(text) for text in FOREIGN} == {15}
    assert all(text.isdigit() for text in FOREIGN)


@pytest.mark.parametrize("text", [*FOREIGN, f"{FULL_WIDTH_15}s", f"1m{ARABIC_INDIC_15}s",
                                  f"{FULL_WIDTH_15}ms"])
def test_durations(text: str) -> None:
    with pytest.raises(ValueError, match=ASCII_ONLY):
        parse_duration(text)
    assert parse_duration("15s") == 15.0  # the ASCII spelling still reads


@pytest.mark.parametrize(("key", "value"), [
    ("interval", f"{FULL_WIDTH_15}s"), ("timeout", ARABIC_INDIC_15),
    ("start_timeout", MIXED_15), ("failures", FULL_WIDTH_15),
    ("restart_budget", f"{FULL_WIDTH_15}/10m"), ("restart_budget", f"10/{ARABIC_INDIC_15}m"),
    ("oom_score_adj", FULL_WIDTH_15),
])
def test_health_keys(key: str, value: str) -> None:
    _spec, problems = parse_health_section({key: value})
    assert [p.key for p in problems] == [key]


@pytest.mark.parametrize("url", [f"http://127.0.0.1:80{FULL_WIDTH_15}/",
                                 f"tcp://127.0.0.1:{ARABIC_INDIC_15}"])
def test_probe_ports(url: str) -> None:
    with pytest.raises(ValueError, match="port"):
        parse_probe(url)


@pytest.mark.parametrize("key", ["startsecs", "startretries", "stopwaitsecs", "stopsignal",
                                 "numprocs", "priority", "exitcodes", "umask",
                                 "stdout_logfile_backups", "stdout_logfile_maxbytes"])
@pytest.mark.parametrize("value", FOREIGN)
def test_program_keys(tmp_path: Path, key: str, value: str) -> None:
    location = write_catalogue(tmp_path / "cat", {"web": {"command": "/bin/sleep 100",
                                                          key: value}})
    with pytest.raises(ConfigError) as caught:
        load_catalogue(location, environ={"PATH": "/usr/bin:/bin"})
    assert caught.value.problems == [
        f"{location}/conf.d/web.conf:3: [program:web] {key}: {value!r}: {ASCII_ONLY}"]


def test_the_check_command_says_it_in_one_line(tmp_path: Path) -> None:
    location = write_catalogue(tmp_path / "cat", {"web": {"command": "/bin/sleep 100",
                                                          "stopsignal": FULL_WIDTH_15}})
    done = subprocess.run([PYTHON, "-m", "start", "--check", "--catalogue", str(location)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 78
    assert done.stderr.splitlines()[0].endswith(f"[program:web] stopsignal: "
                                                f"{FULL_WIDTH_15!r}: {ASCII_ONLY}")
    assert "Traceback" not in done.stderr


async def test_the_control_api_refuses_them(tmp_path: Path) -> None:
    pod = FakePod(default_pod_services())
    async with running_faces(pod, tmp_path) as faces:
        for text in FOREIGN:
            async with faces.unix.post(f"http://pod/v1/services/theia/signal?signal={text}"
                                       ) as answer:
                status, doc = answer.status, json.loads(await answer.text())
            assert status == 400, text
            assert doc["error"] == f"no signal named {text!r}; {ASCII_ONLY}"
        async with faces.unix.post("http://pod/v1/services/theia/signal?signal=15") as answer:
            assert answer.status == 200  # 15 in ASCII is SIGTERM
    assert [c.arg for c in pod.calls] == [15]


@pytest.mark.parametrize("argv", [
    ["signal", FULL_WIDTH_15, "nginx"], ["signal", ARABIC_INDIC_15, "nginx"],
    ["--timeout", FULL_WIDTH_15, "status"], ["logs", "-n", ARABIC_INDIC_15, "nginx"],
])
def test_podctl_flags(argv: list[str], capsys: Any, tmp_path: Path) -> None:
    """A usage error (exit 2) in one line, before the pod is asked anything (there is none)."""
    code = podctl(argv, env={"CODITECT_RUN": str(tmp_path), "CODITECT_HOME": str(tmp_path)})
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and ASCII_ONLY in err


def test_coditect_start_drain_timeout(tmp_path: Path) -> None:
    done = subprocess.run([PYTHON, "-m", "start", "--check", "--drain-timeout", FULL_WIDTH_15],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert f"--drain-timeout: {FULL_WIDTH_15!r} is not a number" in done.stderr
    assert ASCII_ONLY in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("addr", [f"127.0.0.1:80{FULL_WIDTH_15}", f":{ARABIC_INDIC_15}"])
def test_health_addr(addr: str) -> None:
    with pytest.raises(ValueError, match="ASCII digits"):
        parse_addr(addr)


@pytest.mark.parametrize("argv", [["--poll-interval", FULL_WIDTH_15],
                                  ["--queue-size", ARABIC_INDIC_15],
                                  ["--metrics-addr", f"127.0.0.1:{FULL_WIDTH_15}"]])
def test_file_monitor_flags(argv: list[str], capsys: Any, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        monitor_parser().parse_args([str(tmp_path), *argv])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("coditect-file-monitor: error:")
    with pytest.raises(ValueError, match="HOST:PORT"):
        monitor_metrics.parse_addr(f"127.0.0.1:{FULL_WIDTH_15}")
