"""`podctl doctor` and `podctl validate` with no pod: stand-in tools and a stand-in engine,
all of them real executables run as real processes."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from healthz.podctl import main
from healthz.podctl_doctor import TOOLS, health_target

# What a stand-in engine (`python -m start --check`) does, chosen by FAKE_ENGINE.
ENGINE = """\
import os, sys
print("checked", " ".join(sys.argv[1:]))
mode = os.environ.get("FAKE_ENGINE", "valid")
if mode == "invalid":
    print("conf.d/codi2.conf: [program:codi2] command: '/usr/local/bin/codi2' is not an "
          "executable file", file=sys.stderr)
    sys.exit(78)
if mode == "broken":
    print("ModuleNotFoundError: No module named 'supervisor'", file=sys.stderr)
    sys.exit(1)
"""
VERSIONS = {"gcc": "gcc (Debian 12.2.0-14) 12.2.0", "tmux": "tmux 3.3a", "node": "v20.11.1",
            "zip": "Copyright (c) 1990-2008 Info-ZIP\nZip 3.0 (July 5th 2008). Usage:"}  # fmt: skip


def executable(path: Path, script: str) -> None:
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def image(tmp_path: Path) -> dict[str, Any]:
    """A bin directory with every promised tool and the Rust file-monitor, a writable home,
    a stand-in engine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, _ in TOOLS:
        version = VERSIONS.get(tool, f"{tool} version 1.2.3")
        executable(bin_dir / tool, f"printf '%s\\n' '{version}'")
    executable(bin_dir / "file-monitor", "exit 0")
    engine = tmp_path / "engine" / "start"
    engine.mkdir(parents=True)
    (engine / "__init__.py").write_text("")
    (engine / "__main__.py").write_text(ENGINE)
    (tmp_path / "home").mkdir()
    env = {
        "PATH": str(bin_dir),
        "PYTHONPATH": str(engine.parent),
        "CODITECT_HOME": str(tmp_path / "home"),
        "CODITECT_RUN": str(tmp_path / "run"),  # no pod
        "CODITECT_HEALTH_ADDR": "127.0.0.1:1",  # nothing listens there
    }
    return {"bin": bin_dir, "env": env, "home": tmp_path / "home"}


def doctor(image: dict[str, Any], capsys: Any, *argv: str) -> tuple[int, str]:
    code = main(["doctor", *argv], env=image["env"])
    return code, capsys.readouterr().out


def has(out: str, *words: str) -> bool:
    """A report line holding these words in this order, however they are aligned."""
    pattern = r"\s+".join(re.escape(w) for w in words)
    return any(re.search(pattern, line) for line in out.splitlines())


def test_a_complete_image_without_a_pod_is_fine(image: dict[str, Any], capsys: Any) -> None:
    """Every tool with its version, the catalogue valid, home writable: exit 0 with no pod."""
    code, out = doctor(image, capsys)
    assert code == 0, out
    assert has(out, "[ok]", "gcc", "12.2.0", f"{image['bin']}/gcc")
    assert has(out, "[ok]", "tmux", "3.3a")
    assert has(out, "[ok]", "zip", "3.0")
    assert has(out, "[ok]", "node", "20.11.1")
    assert "valid: every command resolves to an executable" in out
    assert has(out, "[ok]", str(image["home"]), "exists and is writable")
    assert "pod unreachable: no socket at" in out
    assert "(no pod running)" in out
    assert out.endswith("everything required is in place\n")
    assert not list(image["home"].iterdir()), "the writability probe was left behind"


def test_missing_developer_tools_are_warnings(image: dict[str, Any], capsys: Any) -> None:
    """Missing recommended tools are listed but exit 0; --strict makes them required."""
    for tool in ("ag", "fzf"):
        (image["bin"] / tool).unlink()
    code, out = doctor(image, capsys)
    assert code == 0
    assert has(out, "[warn]", "ag", "missing") and has(out, "[warn]", "fzf", "missing")
    assert "2 recommended item(s) missing" in out
    code, out = doctor(image, capsys, "--strict")
    assert code == 1
    assert has(out, "[FAIL]", "ag", "missing (required)")


def test_a_missing_runtime_is_required(image: dict[str, Any], capsys: Any) -> None:
    """node (Theia's runtime) missing: exit 1."""
    (image["bin"] / "node").unlink()
    code, out = doctor(image, capsys)
    assert code == 1
    assert has(out, "[FAIL]", "node", "missing (required)")
    assert "1 required item(s) missing or failing" in out


def test_an_invalid_catalogue_is_required(image: dict[str, Any], capsys: Any) -> None:
    """The engine's exit 78 fails doctor, with the engine's own messages."""
    image["env"]["FAKE_ENGINE"] = "invalid"
    code, out = doctor(image, capsys, "--catalogue", "/some/where")
    assert code == 1
    assert "start --check --catalogue /some/where" in out
    assert "'/usr/local/bin/codi2' is not an executable file" in out


def test_an_engine_that_cannot_run_is_a_warning(image: dict[str, Any], capsys: Any) -> None:
    """An engine that fails for another reason is reported, not counted as required."""
    image["env"]["FAKE_ENGINE"] = "broken"
    code, out = doctor(image, capsys)
    assert code == 0
    assert "[warn]" in out and "could not check (exit 1): ModuleNotFoundError" in out


def test_a_missing_home_is_required(image: dict[str, Any], capsys: Any) -> None:
    """$CODITECT_HOME missing: exit 1."""
    image["home"].rmdir()
    code, out = doctor(image, capsys)
    assert code == 1
    assert has(out, "[FAIL]", str(image["home"]), "does not exist")


@pytest.mark.parametrize(
    ("monitor", "said"),
    [("file-monitor", "the Rust file-monitor"), ("coditect-file-monitor", "the Python stand-in")],
)
def test_which_file_monitor(image: dict[str, Any], capsys: Any, monitor: str, said: str) -> None:
    """Doctor says which file monitor the pod has."""
    (image["bin"] / "file-monitor").unlink()
    _, out = doctor(image, capsys)
    assert "no file-monitor, no coditect-file-monitor" in out
    executable(image["bin"] / monitor, "exit 0")
    _, out = doctor(image, capsys)
    assert said in out


@pytest.mark.parametrize(
    ("addr", "target"),
    [("0.0.0.0:8081", ("127.0.0.1", 8081)), (":9000", ("127.0.0.1", 9000)),
     ("[::]:8081", ("::1", 8081)), ("10.0.0.5:81", ("10.0.0.5", 81)),
     ("localhost:x", ("localhost", 8081))],
)  # fmt: skip
def test_health_target(addr: str, target: tuple[str, int]) -> None:
    """A wildcard listen address is probed on loopback."""
    assert health_target(addr) == target


def test_validate_passes_the_engine_through(image: dict[str, Any], capfd: Any) -> None:
    """`validate DIR` runs the engine's check on DIR; its output and exit code come through."""
    assert main(["validate", "/cat"], env=image["env"]) == 0
    assert capfd.readouterr().out == "checked --check --catalogue /cat\n"
    image["env"]["FAKE_ENGINE"] = "invalid"
    assert main(["validate"], env=image["env"]) == 78
    captured = capfd.readouterr()
    assert captured.out == "checked --check\n"
    assert "is not an executable file" in captured.err


def test_validate_uses_this_python(image: dict[str, Any], capfd: Any) -> None:
    """The engine runs on the interpreter podctl runs on (the pod's venv)."""
    image["env"]["FAKE_ENGINE"] = "valid"
    (image["bin"].parent / "engine" / "start" / "__main__.py").write_text(
        "import sys\nprint(sys.executable)\n"
    )
    main(["validate"], env=image["env"])
    assert capfd.readouterr().out == f"{sys.executable}\n"
    assert os.path.isabs(sys.executable)


def test_a_tcp_liveness_probe_is_warned_about(image: dict[str, Any], capsys: Any,
                                             tmp_path: Path) -> None:
    """The real engine's `--check` and `podctl doctor` warn about a `tcp://` liveness probe and
    say why; an HTTP one is not warned about; `--strict` makes the warning required."""
    catalogue = tmp_path / "pod.conf"
    catalogue.write_text("[program:web]\ncommand=/bin/sleep 100\n[health:web]\n"
                         "live=tcp://127.0.0.1:5000\n[program:api]\ncommand=/bin/sleep 100\n"
                         "[health:api]\nlive=http://127.0.0.1:5001/\n")
    image["env"]["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    checked = subprocess.run([sys.executable, "-m", "start", "--check", "--catalogue",
                              str(catalogue)], capture_output=True, text=True, timeout=60,
                             env={**os.environ, **image["env"], "PATH": os.environ["PATH"]})
    assert checked.returncode == 0, checked.stderr
    warnings = [line for line in checked.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "[health:web] live=tcp://" in warnings[0]
    assert "stopped or hung process" in warnings[0]
    code, out = doctor(image, capsys, "--catalogue", str(catalogue))
    assert code == 0, out
    assert has(out, "[warn]", "liveness", "[health:web]", "live=tcp://127.0.0.1:5000:")
    assert "[health:api]" not in out
    code, out = doctor(image, capsys, "--strict", "--catalogue", str(catalogue))
    assert has(out, "[FAIL]", "liveness", "[health:web]")


def test_a_wildcard_bind_is_an_exposure_warning(image: dict[str, Any], capsys: Any,
                                               tmp_path: Path) -> None:
    """The real engine's `--check` warns about a command binding 0.0.0.0; doctor labels it
    `exposure`, not `liveness`; a service marked public=true is not warned about."""
    catalogue = tmp_path / "pod.conf"
    catalogue.write_text("[program:web]\ncommand=/bin/sleep 100 --hostname=0.0.0.0\n"
                         "[program:door]\ncommand=/bin/sleep 100 --host 0.0.0.0\n"
                         "[health:door]\npublic=true\n")
    image["env"]["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    code, out = doctor(image, capsys, "--catalogue", str(catalogue))
    assert code == 0, out
    assert has(out, "[warn]", "exposure", "[program:web]", "command binds a wildcard address",
               "(--hostname=0.0.0.0)")
    assert "[program:door]" not in out and "liveness" not in out
    code, out = doctor(image, capsys, "--strict", "--catalogue", str(catalogue))
    assert code == 1 and has(out, "[FAIL]", "exposure", "[program:web]")
