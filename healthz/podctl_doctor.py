"""`podctl doctor`: is this pod, or this image with no pod running, fit to run?

Each finding is `required` (missing means the pod cannot do its job: exit 1) or recommended
(a warning; `--strict` makes every one required, for checking an image in CI). What is which
is documented in docs/PODCTL.md. Every outside call (subprocess, socket, TCP) has a timeout,
and the tools are asked for their versions in parallel.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

from healthz.podctl_client import PodClient
from healthz.podctl_engine import INVALID_CATALOGUE, check_command, run_check
from healthz.podctl_errors import PodctlError, PodUnreachable

TYPE_CHECKING = False  # spares the `typing` import at run time; mypy treats it as True
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

# The tools the image promises, each with the argument that makes it print its version.
TOOLS: tuple[tuple[str, str], ...] = (
    ("gcc", "--version"),
    ("make", "--version"),
    ("jq", "--version"),
    ("wget", "--version"),
    ("tree", "--version"),
    ("htop", "--version"),
    ("vim", "--version"),
    ("nano", "--version"),
    ("git-lfs", "--version"),
    ("rg", "--version"),
    ("fzf", "--version"),
    ("tmux", "-V"),
    ("rsync", "--version"),
    ("zip", "-h"),  # `zip -v` with stdin and stdout redirected would start zipping stdin
    ("unzip", "-v"),
    ("ag", "--version"),
    ("python3", "--version"),
    ("pip", "--version"),
    ("node", "--version"),
    ("npm", "--version"),
)
# The runtimes of the pod itself (the supervisor runs on Python, Theia on Node); the others
# are the developer's tools: promised, but the pod runs without them.
REQUIRED_TOOLS = frozenset({"python3", "node"})
TOOL_TIMEOUT = 5.0
NET_TIMEOUT = 2.0
POD_CHECK_TIMEOUT = 70.0  # the pod gives its catalogue check 60 s
_VERSION = re.compile(r"\d+(?:\.\d+)+[a-z]?")

OK, FAIL, WARN, INFO = "ok", "FAIL", "warn", "--"
_COLOURS = {OK: "32", FAIL: "31", WARN: "33"}


class Finding:
    __slots__ = ("detail", "label", "verdict")

    def __init__(self, verdict: str, label: str, detail: str = "") -> None:
        self.verdict = verdict
        self.label = label
        self.detail = detail


def problem(required: bool) -> str:
    return FAIL if required else WARN


class Doctor:
    """The checks, with the outside world passed in: environment, PATH lookup, a runner."""

    def __init__(
        self,
        env: Mapping[str, str],
        client: PodClient,
        home: str,
        *,
        strict: bool = False,
        catalogue: str | None = None,
        which: Callable[[str], str | None] | None = None,
    ) -> None:
        self.env = env
        self.client = client
        self.home = home
        self.strict = strict
        self.catalogue = catalogue
        self.which = which or (lambda name: shutil.which(name, path=env.get("PATH")))
        self.pod_reachable = False

    def sections(self) -> list[tuple[str, list[Finding]]]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            tools = pool.map(self.tool, (t for t, _ in TOOLS))
            catalogue = pool.submit(self.catalogue_check)
            pod = self.pod()
            health = self.health_port()
            return [
                ("pod", pod),
                ("catalogue", catalogue.result()),
                ("tools", list(tools)),
                ("file monitor", [self.file_monitor()]),
                ("CODITECT_HOME", [self.home_dir()]),
                ("health port", [health]),
            ]

    def pod(self) -> list[Finding]:
        try:
            status = self.client.call("GET", "/v1/status", timeout=NET_TIMEOUT)
        except PodctlError as exc:
            return [Finding(INFO, "not reachable", exc.message + "; checking without it")]
        self.pod_reachable = True
        services = status.get("services", [])
        good = [s for s in services if s.get("state") == "running" and s.get("ready")]
        found = [
            Finding(
                OK,
                self.client.socket_path,
                f"{len(services)} services, {len(good)} running and ready"
                + (", draining" if status.get("draining") else ""),
            )
        ]
        for s in services:
            if s not in good:
                # Ready but still in its startsecs window is "starting", not "not ready".
                why = (
                    f"{s.get('state')}"
                    + ("" if s.get("ready") else ", not ready")
                    + (f": {s['reason']}" if s.get("reason") else "")
                )
                found.append(Finding(problem(self.strict), str(s.get("name")), why))
        found += [Finding(WARN, "last reload", e) for e in status.get("reload_errors", [])]
        return found

    def catalogue_check(self) -> list[Finding]:
        """The running pod's own check (its catalogue, overlay, environment); without a pod,
        or with --catalogue, the engine's check run here."""
        if self.catalogue is None:
            try:
                answer = self.client.call("GET", "/v1/check", timeout=POD_CHECK_TIMEOUT)
            except PodUnreachable:
                return self.catalogue_here(", checked here: no pod to ask")
            except PodctlError:  # an older engine, or one shutting down
                return self.catalogue_here(", checked here: the pod cannot check")
            return self.said_by_pod(answer)
        return self.catalogue_here("")

    def said_by_pod(self, answer: Any) -> list[Finding]:
        label = "the pod's catalogue"
        if not isinstance(answer, dict) or not isinstance(answer.get("valid"), bool):
            return [Finding(problem(self.strict), label, "could not check: the pod's answer "
                            "is not what the contract says")]
        problems = [str(p) for p in answer.get("problems") or ()]
        if answer["valid"]:
            where = str(answer.get("catalogue"))
            if answer.get("overlay"):
                where += f" + {answer['overlay']}"
            return [Finding(OK, label, f"valid, as the pod reads it ({where})"),
                    *(Finding(problem(self.strict), "liveness", str(line))
                      for line in answer.get("warnings") or ())]
        if not answer.get("ran", True):
            return [Finding(problem(self.strict), label,
                            "could not check: " + "; ".join(problems))]
        return [Finding(FAIL, label, "\n".join(["invalid catalogue:", *problems]))]

    def catalogue_here(self, where: str) -> list[Finding]:
        label = " ".join(["python", *check_command(self.catalogue)[1:]])
        try:
            done = run_check(self.catalogue, capture=True, env=self.env)
        except subprocess.TimeoutExpired:
            return [Finding(problem(self.strict), label, "did not finish in time")]
        except OSError as exc:
            return [Finding(problem(self.strict), label, f"could not run: {exc}")]
        said = (done.stderr or "") + "\n" + (done.stdout or "")
        lines = [line for line in said.splitlines() if line.strip()]
        if done.returncode == 0:
            warned = [line.removeprefix("warning: ") for line in lines
                      if line.startswith("warning: ")]
            return [Finding(OK, label, f"valid: every command resolves to an executable{where}"),
                    *(Finding(problem(self.strict), _topic(line), line) for line in warned)]
        if done.returncode == INVALID_CATALOGUE:
            said = f"invalid catalogue ({where.removeprefix(', ')}):" if where else \
                "invalid catalogue:"
            return [Finding(FAIL, label, "\n".join([said, *lines]))]
        last = lines[0] if lines else "no output"
        return [
            Finding(
                problem(self.strict), label, f"could not check (exit {done.returncode}): {last}"
            )
        ]

    def tool(self, name: str) -> Finding:
        required = self.strict or name in REQUIRED_TOOLS
        path = self.which(name)
        if path is None:
            return Finding(problem(required), name, "missing" + (" (required)" if required else ""))
        flag = dict(TOOLS)[name]
        try:
            done = subprocess.run(
                [path, flag],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=TOOL_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Finding(problem(required), name, f"{path} does not run: {exc}")
        found = _VERSION.search((done.stdout + "\n" + done.stderr)[:4000])
        version = found.group() if found else "(version unknown)"
        return Finding(OK, name, f"{version:<9} {path}")

    def file_monitor(self) -> Finding:
        rust = self.which("file-monitor")
        if rust:
            return Finding(OK, "file-monitor", f"the Rust file-monitor, {rust}")
        ours = self.which("coditect-file-monitor")
        if ours:
            return Finding(OK, "coditect-file-monitor", f"the Python stand-in, {ours}")
        return Finding(problem(self.strict), "none", "no file-monitor, no coditect-file-monitor")

    def home_dir(self) -> Finding:
        if not os.path.isdir(self.home):
            return Finding(FAIL, self.home, "does not exist")
        probe = os.path.join(self.home, f".podctl-doctor-{os.getpid()}")
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as exc:
            return Finding(FAIL, self.home, f"not writable: {exc.strerror or exc}")
        return Finding(OK, self.home, "exists and is writable")

    def health_port(self) -> Finding:
        host, port = health_target(self.env.get("CODITECT_HEALTH_ADDR") or "0.0.0.0:8081")
        label = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
        try:
            conn.request("GET", "/livez")
            answer = conn.getresponse()
            body = answer.read(200).decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException) as exc:
            if self.pod_reachable:
                return Finding(FAIL, label, f"no answer on /livez: {exc}")
            return Finding(INFO, label, "no answer on /livez (no pod running)")
        finally:
            conn.close()
        if answer.status == 200:
            return Finding(OK, label, f"/livez answers 200 {body}")
        return Finding(FAIL, label, f"/livez answers {answer.status}: the pod is not live")


def health_target(addr: str) -> tuple[str, int]:
    """Where to knock for `CODITECT_HEALTH_ADDR`: a wildcard listener is asked on loopback."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "*"):  # noqa: S104  # reads an address, binds nothing
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    # Only 0-9: int() would read a full-width 8081, which the engine refuses (healthz.digits).
    return host, int(port) if port.isascii() and port.isdecimal() else 8081


def report(sections: list[tuple[str, list[Finding]]], colour: bool) -> tuple[str, int, int]:
    """The readable report, and how many required and recommended findings failed."""
    out: list[str] = []
    required = recommended = 0
    for title, findings in sections:
        out.append(title)
        width = max((len(f.label) for f in findings), default=0)
        for f in findings:
            required += f.verdict == FAIL
            recommended += f.verdict == WARN
            mark = f"[{f.verdict}]".ljust(6)
            if colour and f.verdict in _COLOURS:
                mark = f"\x1b[{_COLOURS[f.verdict]}m{mark}\x1b[0m"
            first, *more = f.detail.splitlines() or [""]
            out.append(f"  {mark} {f.label.ljust(width)}  {first}".rstrip())
            out.extend(f"  {'':6}   {line}" for line in more)
    out.append("")
    if required:
        out.append(f"{required} required item(s) missing or failing")
    else:
        out.append("everything required is in place")
    if recommended:
        out.append(f"{recommended} recommended item(s) missing (--strict makes them required)")
    return "\n".join(out) + "\n", required, recommended


def _topic(warning: str) -> str:
    """The label of a `--check` warning: a wildcard bind is about exposure, the rest about
    liveness (start/catalogue/checks.py and exposure.py word them)."""
    return "exposure" if "binds a wildcard address" in warning else "liveness"
