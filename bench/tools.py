"""The same programs, written out for each supervisor: ours, supervisord, tini and s6-svscan.

A `Program` is what every tool runs identically (argv and the few keys they share). Each
`*_setup` writes the tool's configuration under a scratch directory and returns how to start
it as PID 1 (`Setup.argv`) plus what the harness needs to talk to it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.pods import CHILDREN, ROOT

VENV_BIN = Path(sys.executable).parent
SUPERVISORD = str(VENV_BIN / "supervisord")
SUPERVISORCTL = str(VENV_BIN / "supervisorctl")
TOOLS = ("ours", "supervisord", "tini", "s6")
# The demo API stand-in refuses to start without these (as the real binary does).
STANDIN_ENV = {"JWT_SECRET": "bench-only", "FDB_CLUSTER_FILE": str(ROOT / "demo" / "fdb.cluster")}


@dataclass(frozen=True)
class Program:
    name: str
    argv: tuple[str, ...]
    startsecs: float = 0
    stopwaitsecs: float = 10
    autorestart: str = "true"
    autostart: bool = True
    priority: int = 999
    health: dict[str, str] = field(default_factory=dict)  # ours only: [health:NAME]
    extra: dict[str, str] = field(default_factory=dict)  # more [program:x] keys, both dialects


def marked(fifo: Path, name: str, *argv: str, **keys: object) -> Program:
    """A program whose process announces itself on the marks FIFO before it execs `argv`."""
    return Program(name, (str(CHILDREN / "mark"), str(fifo), name, *argv), **keys)  # type: ignore[arg-type]


@dataclass
class Setup:
    tool: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    home: Path | None = None  # ours: CODITECT_HOME (logs/<svc>.log)
    socket: Path | None = None  # ours: podctl.sock; supervisord: its unix socket
    health_port: int | None = None
    config: Path | None = None

    def log_of(self, name: str) -> Path:
        if self.tool == "ours":
            assert self.home is not None
            return self.home / "logs" / f"{name}.log"
        assert self.config is not None
        return self.config.parent / "logs" / f"{name}.log"

    def ctl(self, *args: str) -> list[str]:
        """The tool's own status command (podctl / supervisorctl) with `args`."""
        assert self.socket is not None
        if self.tool == "ours":
            return [str(VENV_BIN / "podctl"), "--socket", str(self.socket), *args]
        assert self.config is not None
        return [SUPERVISORCTL, "-c", str(self.config), *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _program_keys(program: Program) -> dict[str, str]:
    return {
        "command": shlex.join(program.argv),
        "autostart": str(program.autostart).lower(),
        "autorestart": program.autorestart,
        "startsecs": f"{program.startsecs:g}",
        "stopwaitsecs": f"{program.stopwaitsecs:g}",
        "priority": str(program.priority),
        **program.extra,
    }


def ours_setup(directory: Path, programs: list[Program], *, catalogue: Path | None = None,
               overlay: Path | None = None, health_port: int | None = None) -> Setup:
    """coditect-start with a catalogue in supervisord's dialect (or a given one)."""
    if catalogue is None:
        catalogue = directory / "catalogue"
        (catalogue / "conf.d").mkdir(parents=True)
        (catalogue / "supervisord.conf").write_text(
            "[supervisord]\nnodaemon=true\n\n[include]\nfiles = conf.d/*.conf\n")
        for program in programs:
            text = f"[program:{program.name}]\n" + "".join(
                f"{k}={v}\n" for k, v in _program_keys(program).items())
            if program.health:
                text += f"\n[health:{program.name}]\n" + "".join(
                    f"{k}={v}\n" for k, v in program.health.items())
            (catalogue / "conf.d" / f"{program.name}.conf").write_text(text)
    home, run = directory / "home", directory / "run"
    port = health_port or free_port()
    argv = [str(VENV_BIN / "coditect-start"), "--catalogue", str(catalogue), "--home", str(home),
            "--run-dir", str(run), "--log-format", "json", "--health-addr", f"127.0.0.1:{port}"]
    if overlay is not None:
        argv += ["--overlay", str(overlay)]
    env = {"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "CODITECT_HOME": str(home), "CODITECT_RUN": str(run)}
    return Setup("ours", argv, env, home=home, socket=run / "podctl.sock", health_port=port)


def supervisord_setup(directory: Path, programs: list[Program]) -> Setup:
    """supervisord 4.3.0 in the foreground, its control socket and per-program log files."""
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    sock = directory / "supervisor.sock"
    config = directory / "supervisord.conf"
    sections = [
        f"[supervisord]\nnodaemon=true\nlogfile={directory / 'supervisord.log'}\n"
        f"pidfile={directory / 'supervisord.pid'}\nchildlogdir={directory / 'logs'}\n"
        "loglevel=info\n",
        f"[unix_http_server]\nfile={sock}\nchmod=0700\n",
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
        f"[supervisorctl]\nserverurl=unix://{sock}\n",
    ]
    for program in programs:
        keys = {"stdout_logfile": str(directory / "logs" / f"{program.name}.log"),
                "redirect_stderr": "true", **_program_keys(program)}
        # supervisord wants whole seconds here.
        for key in ("startsecs", "stopwaitsecs"):
            keys[key] = str(round(float(keys[key])))
        sections.append(f"[program:{program.name}]\n" + "".join(
            f"{k}={v}\n" for k, v in keys.items()))
    config.write_text("\n".join(sections))
    env = {"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    return Setup("supervisord", [SUPERVISORD, "-n", "-c", str(config)], env, socket=sock,
                 config=config)


def _shell_line(program: Program) -> str:
    """One program started in the background by a shell, in its `directory=` if it has one."""
    command = shlex.join(program.argv)
    if "directory" in program.extra:
        return f"(cd {shlex.quote(program.extra['directory'])} && exec {command}) &\n"
    return f"{command} &\n"


def tini_setup(directory: Path, programs: list[Program]) -> Setup:
    """tini as PID 1 running a shell script that starts every program in the background.

    `-g` sends tini's signals to the whole process group, which the background children share
    with the script (no job control in a non-interactive shell)."""
    script = directory / "start.sh"
    script.write_text("#!/bin/sh\n" + "".join(_shell_line(p) for p in programs)
                      + "wait\n")
    script.chmod(0o755)
    return Setup("tini", [_which("tini"), "-g", "--", "/bin/sh", str(script)])


def s6_setup(directory: Path, programs: list[Program]) -> Setup:
    """s6-svscan over one service directory per program (`run` execs the program)."""
    scan = directory / "scan"
    for program in programs:
        service = scan / program.name
        service.mkdir(parents=True)
        run = service / "run"
        run.write_text(f"#!/bin/sh\nexec {shlex.join(program.argv)}\n")
        run.chmod(0o755)
    return Setup("s6", [_which("s6-svscan"), str(scan)])


def floor_setup(directory: Path, programs: list[Program]) -> Setup:
    """The physical floor: a plain shell as PID 1 forking and exec'ing the same children."""
    script = directory / "floor.sh"
    script.write_text("#!/bin/sh\n" + "".join(_shell_line(p) for p in programs)
                      + "wait\n")
    return Setup("floor", ["/bin/sh", str(script)])


def setup_for(tool: str, directory: Path, programs: list[Program]) -> Setup:
    directory.mkdir(parents=True, exist_ok=True)
    make = {"ours": ours_setup, "supervisord": supervisord_setup, "tini": tini_setup,
            "s6": s6_setup, "floor": floor_setup}[tool]
    return make(directory, programs)


def _which(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (scripts/bench installs it)")
    return found


def env_for(setup: Setup) -> dict[str, str]:
    return {**setup.env, "PYTHONPATH": str(ROOT)}
