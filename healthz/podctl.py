"""`podctl`: see and steer the pod from inside it, through the control socket.

It starts fast: the standard library only, and each verb imports what it needs when it runs
(`podctl --help` loads neither `socket` nor `json`): the imports inside functions below are
all for that, and docs/PODCTL.md measures it. The socket's routes and JSON shapes
are docs/CONTROL_API.md; the command's behaviour and exit codes are docs/PODCTL.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from healthz.podctl_errors import (
    FAILED,
    NOT_RUNNING,
    OK,
    UNREACHABLE,
    USAGE,
    PodctlError,
    PodUnreachable,
    check_name,
)

TYPE_CHECKING = False  # spares the `typing` import at run time; mypy treats it as True
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, NoReturn

    from healthz.podctl_client import PodClient
    from healthz.podctl_logs import Output

READ_TIMEOUT = 10.0  # a question the pod answers from cached state
VERB_TIMEOUT = 330.0  # an order waited on: the pod bounds the wait (stopwaitsecs, start window)
CHECK_TIMEOUT = 70.0  # the pod's catalogue check: it gives its parse 60 s

EPILOG = """\
exit codes:
  0  fine
  1  a verb failed; run: the name is taken or the command died at once; doctor found
     something required missing; is-ready: not ready
  2  usage error (unknown option, bad signal, bad service name; run: no such executable
     or directory, bad --env)
  3  a named service (or any, for bare `status`) is not running or not ready
  4  pod unreachable (no socket, refused, permission denied, no answer), or unknown service
 78  validate: the catalogue is invalid

The socket is $CODITECT_RUN/podctl.sock (CODITECT_RUN defaults to /run/coditect). `logs`,
`validate` and `doctor` ask the pod; with no pod to ask they work here and say so (logs from
$CODITECT_HOME/logs, CODITECT_HOME defaulting to /app/.coditect).
"""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not usage plus error."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Context:
    """What every verb is handed: the environment, the streams, and the way to the pod."""

    __slots__ = ("args", "env", "err", "out")

    def __init__(self, args: argparse.Namespace, env: Mapping[str, str]) -> None:
        self.args = args
        self.env = env
        self.out = sys.stdout
        self.err = sys.stderr

    def client(self, timeout: float = READ_TIMEOUT) -> PodClient:
        from healthz.podctl_client import PodClient, default_socket

        path = getattr(self.args, "socket", None) or default_socket(self.env)
        given = getattr(self.args, "timeout", None)
        return PodClient(path, timeout if given is None else given)

    def home(self) -> str:
        from healthz.podctl_logs import DEFAULT_HOME

        return getattr(self.args, "home", None) or self.env.get("CODITECT_HOME") or DEFAULT_HOME

    def colour(self) -> bool:
        from healthz.podctl_table import use_colour

        return use_colour(self.out, self.env)


# --- the verbs -----------------------------------------------------------------------------


def fetch_services(ctx: Context, route: str) -> tuple[list[str], Any, list[Any]]:
    """GET `route`, keep the named services (all when none is named); with --json, print the
    document with just those. (names, document, services) for the verb's own rendering."""
    names = [check_name(n) for n in ctx.args.names]
    document = ctx.client().call("GET", route)
    services = select(services_of(document), names)
    if ctx.args.json:
        import json

        json.dump({**document, "services": services}, ctx.out, indent=2)
        ctx.out.write("\n")
    return names, document, services


def cmd_status(ctx: Context) -> int:
    """Services as a table (or JSON). Exit 3 exactly when /readyz would fail: a critical
    service not ready, or a drain; a non-critical one not ready only warns. With names, 3
    when one of those named is not running and ready."""
    from healthz.podctl_table import render

    names, status, services = fetch_services(ctx, "/v1/status")
    if not ctx.args.json:
        seeding = status.get("seeding")  # the pod's own first task, before the catalogue's
        listed = [seeding, *services] if isinstance(seeding, dict) and not names else services
        ctx.out.write(render(listed, ctx.colour()))
        for s in services:  # what a service said of itself (sd_notify's STATUS=)
            if s.get("status"):
                ctx.out.write(f"{s.get('name')}: {s['status']}\n")
        for s in services:  # a task that failed, and what it holds back: why, on stderr
            if s.get("failed"):
                ctx.err.write(f"podctl: {s.get('name')}: {s.get('reason')}\n")
        if status.get("draining"):
            ctx.err.write("podctl: the pod is draining (shutting down)\n")
        for error in status.get("reload_errors") or ():
            ctx.err.write(f"podctl: last reload rejected: {error}\n")
        for problem in status.get("home_problems") or ():
            ctx.err.write(f"podctl: warning: {problem} (logs go to stdout only)\n")
    if names:
        # A task is done, not running, when it succeeded: its `ready` says so.
        bad = [s for s in services if not s.get("ready")
               or (s.get("kind") != "task" and s.get("state") != "running")]
        return NOT_RUNNING if bad else OK
    for s in services:
        if not s.get("critical", True) and not s.get("ready") and not ctx.args.json:
            ctx.err.write(f"podctl: {s.get('name')} is not ready (not critical: the pod is "
                          "still ready)\n")
    return OK if pod_ready(status, services) else NOT_RUNNING


def pod_ready(status: Any, services: list[Any]) -> bool:
    """The pod's own /readyz verdict; computed the same way from a pod that does not send it."""
    if isinstance(status.get("ready"), bool):
        return bool(status["ready"])
    return not status.get("draining") and all(
        s.get("ready") for s in services if s.get("critical", True))


def cmd_health(ctx: Context) -> int:
    """Verdicts with reasons; 3 when the pod (or a named service) is not ready or not live."""
    names, health, services = fetch_services(ctx, "/v1/health")
    if not ctx.args.json:
        width = max((len(str(s.get("name"))) for s in services), default=0)
        for s in services:
            good = bool(s.get("ready") and s.get("live"))
            verdict = ", ".join(
                [
                    "ready" if s.get("ready") else "not ready",
                    "live" if s.get("live") else "not live",
                    *([] if s.get("critical", True) else ["non-critical"]),
                ]
            )
            reason = "" if good or not s.get("reason") else f": {s['reason']}"
            name = str(s.get("name")).ljust(width)
            ctx.out.write(
                f"[{'+' if good else '-'}] {name}  {s.get('state', '?'):<8}  {verdict}{reason}\n"
            )
        if not names:
            ctx.out.write(
                "pod: "
                + ", ".join(
                    [
                        "ready" if health.get("ready") else "NOT ready",
                        "live" if health.get("live") else "NOT live",
                        "started up" if health.get("started_up") else "not started up yet",
                    ]
                )
                + "\n"
            )
    if names:
        good = all(s.get("ready") and s.get("live") for s in services)
    else:
        good = bool(health.get("ready") and health.get("live"))
    return OK if good else NOT_RUNNING


def cmd_order(ctx: Context) -> int:
    """start / stop / restart / signal: one order per name, in parallel, each outcome said."""
    import threading

    names = [check_name(n) for n in ctx.args.names]
    client = ctx.client()
    select(services_of(client.call("GET", "/v1/status")), names)  # unknown name: nothing done
    query = []
    if ctx.args.verb == "signal":
        query.append(f"signal={ctx.args.sig}")
    if ctx.args.no_wait:
        query.append("wait=0")
    suffix = "?" + "&".join(query) if query else ""
    waiting = client if ctx.args.no_wait else ctx.client(VERB_TIMEOUT)
    results: dict[str, Any] = {}

    def order(name: str) -> None:
        try:
            results[name] = waiting.call("POST", f"/v1/services/{name}/{ctx.args.verb}{suffix}")
        except PodctlError as exc:
            results[name] = exc

    workers = [threading.Thread(target=order, args=(n,), daemon=True) for n in dict.fromkeys(names)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    code = OK
    for name in dict.fromkeys(names):
        outcome = results.get(name)
        if isinstance(outcome, PodctlError):
            ctx.err.write(f"podctl: {name}: {outcome.message}\n")
            code = max(code, outcome.code)
        elif isinstance(outcome, dict):
            line = said(name, outcome.get("message") or ("done" if outcome.get("ok") else "failed"))
            if outcome.get("ok"):
                ctx.out.write(line + "\n")
            else:
                ctx.err.write(f"podctl: {line}\n")
                code = max(code, FAILED)
        else:
            ctx.err.write(f"podctl: {name}: the pod's answer is not what the contract says\n")
            code = max(code, FAILED)
    return code


def cmd_run(ctx: Context) -> int:
    """Add a transient service: the command runs as the pod's child, in this directory, with
    the pod's environment plus --env (never this shell's), until `podctl stop NAME`."""
    import json

    from healthz.run_request import MAX_BODY, env_problem

    name = check_name(ctx.args.name)
    if not ctx.args.command:
        raise PodctlError(USAGE, "run: no command given: podctl run NAME -- COMMAND [ARG…]")
    environment: dict[str, str] = {}
    for pair in ctx.args.env:
        key, equals, value = pair.partition("=")
        problem = env_problem(key) if equals else f"--env takes KEY=VALUE, not {pair!r}"
        if problem is not None:
            raise PodctlError(USAGE, problem)
        environment[key] = value
    try:
        directory = os.path.abspath(ctx.args.directory or os.getcwd())
    except FileNotFoundError:
        raise PodctlError(USAGE, "this shell's directory no longer exists: give --directory "
                          "DIR") from None
    body = json.dumps({"name": name, "command": ctx.args.command, "directory": directory,
                       "environment": environment}).encode()
    if len(body) > MAX_BODY:
        raise PodctlError(USAGE, f"run: the command, directory and environment exceed "
                          f"{MAX_BODY // 1024} KiB: put them in a script")
    answer = ctx.client(VERB_TIMEOUT).call("POST", "/v1/run", body=body)
    ok = isinstance(answer, dict) and bool(answer.get("ok"))
    message = answer.get("message") if isinstance(answer, dict) else None
    line = said(name, str(message or ("started" if ok else "failed")))
    if ok:
        ctx.out.write(f"{line}\n")
        return OK
    ctx.err.write(f"podctl: {line}\n")
    return FAILED


def cmd_reload(ctx: Context) -> int:
    """Re-read the catalogue and apply the difference; the pod's messages, 1 when rejected."""
    answer = ctx.client(VERB_TIMEOUT).call("POST", "/v1/reload")
    ok = isinstance(answer, dict) and bool(answer.get("ok"))
    messages = answer.get("messages") if isinstance(answer, dict) else None
    stream = ctx.out if ok else ctx.err
    for message in messages or ():
        stream.write(f"{message}\n")
    if not ok:
        stream.write("podctl: reload rejected; the running catalogue stays\n")
    elif not messages:
        stream.write("reloaded: nothing changed\n")
    return OK if ok else FAILED


def cmd_validate(ctx: Context) -> int:
    """The catalogue checked by the engine: the running pod's own (its catalogue, overlay and
    environment) over the socket; with DIR, or with no pod to ask, here."""
    if ctx.args.dir is None:
        try:
            answer = ctx.client(CHECK_TIMEOUT).call("GET", "/v1/check")
        except PodctlError as exc:
            # No pod, or one that cannot check (an older engine, shutting down): here, said.
            why = "no pod to ask" if isinstance(exc, PodUnreachable) else "the pod cannot check"
            ctx.err.write(f"podctl: {why} ({exc.message}); checking the catalogue here, with "
                          "this shell's environment and CODITECT_CATALOGUE(_OVERLAY)\n")
        else:
            return said_by_pod(ctx, answer)
    return validate_here(ctx)


def said_by_pod(ctx: Context, answer: Any) -> int:
    """The findings of `GET /v1/check` as `coditect-start --check` words them; 78 invalid."""
    from healthz.podctl_engine import INVALID_CATALOGUE

    if not isinstance(answer, dict) or not isinstance(answer.get("valid"), bool):
        raise PodctlError(FAILED, "the pod's answer to GET /v1/check is not what the contract "
                          "says (an older engine?)")
    where = f"the running pod's catalogue {answer.get('catalogue')}"
    if answer.get("overlay"):
        where += f" with its overlay {answer['overlay']}"
    where += ", in its environment"
    for note in answer.get("notes") or ():
        ctx.out.write(f"note: {note}\n")
    for warning in answer.get("warnings") or ():
        ctx.out.write(f"warning: {warning}\n")
    if answer["valid"]:
        ctx.out.write(f"{answer.get('summary') or 'catalogue valid'} ({where})\n")
        return OK
    problems = answer.get("problems") or ()
    for problem in problems:
        ctx.err.write(f"podctl: {problem}\n")
    if not answer.get("ran", True):
        ctx.err.write(f"podctl: the pod could not check {where}\n")
        return FAILED
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    ctx.err.write(f"podctl: catalogue invalid ({count}): {where}; the pod runs on with what "
                  "it runs, and would reject a reload\n")
    return INVALID_CATALOGUE


def validate_here(ctx: Context) -> int:
    """`python -m start --check` in this process's environment, its output passed through."""
    import subprocess

    from healthz.podctl_engine import run_check

    ctx.out.flush()
    ctx.err.flush()
    try:
        done = run_check(ctx.args.dir, capture=False, env=ctx.env)
    except subprocess.TimeoutExpired as exc:
        raise PodctlError(
            FAILED, f"the catalogue check did not finish in {exc.timeout:g}s"
        ) from None
    except OSError as exc:
        raise PodctlError(FAILED, f"could not run the catalogue check: {exc}") from None
    return done.returncode if done.returncode >= 0 else FAILED


def cmd_logs(ctx: Context) -> int:
    """The end of a service's log; with -f, new lines as they come, across rotation. Read by
    the pod over the socket; from the files here with --home, or when no pod answers."""
    import signal

    name = check_name(ctx.args.name)
    ctx.out.flush()
    out: Output = ctx.out.buffer
    if ctx.out.isatty():  # a person's terminal: show control codes, never run them
        from healthz.controls import EscapingWriter

        out = EscapingWriter(ctx.out.buffer)
    previous = signal.signal(signal.SIGTERM, _interrupt) if ctx.args.follow else None
    try:
        if getattr(ctx.args, "home", None) is None:
            query = f"lines={ctx.args.lines}" + ("&follow=1" if ctx.args.follow else "")
            try:
                ctx.client().stream(f"/v1/logs/{name}?{query}", out, follow=ctx.args.follow)
                return OK
            except PodUnreachable as exc:
                ctx.err.write(f"podctl: no pod to ask ({exc.message}); reading the log file "
                              "here\n")
                ctx.err.flush()
        return logs_here(ctx, name, out)
    except KeyboardInterrupt:
        if not ctx.args.follow:
            raise
        return OK  # Ctrl-C or SIGTERM: the normal way to stop following
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def logs_here(ctx: Context, name: str, out: Output) -> int:
    """The log file read directly: a pod that is gone leaves its logs behind, and they are
    worth reading then most of all."""
    from healthz.podctl_logs import Follower, log_path, open_log, tail

    path = log_path(ctx.home(), name)
    log = open_log(path)
    follower = Follower(path, log, out)
    try:
        out.write(tail(path, log, os.fstat(log.fileno()).st_size, ctx.args.lines))
        out.flush()
        if ctx.args.follow:
            follower.run()
        return OK
    finally:
        follower.close()


def cmd_doctor(ctx: Context) -> int:
    """Checks with or without a running pod; 1 when something required is missing."""
    from healthz.podctl_doctor import Doctor, report

    doctor = Doctor(
        ctx.env,
        ctx.client(),
        ctx.home(),
        strict=ctx.args.strict,
        catalogue=ctx.args.catalogue,
    )
    text, required, _ = report(doctor.sections(), ctx.colour())
    ctx.out.write(text)
    return FAILED if required else OK


def cmd_is_ready(ctx: Context) -> int:
    """0 when /readyz answers 200, else 1: never 2, which Docker's HEALTHCHECK reserves."""
    try:
        answer = ctx.client().request("GET", "/readyz" if ctx.args.quiet else "/readyz?verbose")
    except PodctlError as exc:
        if not ctx.args.quiet:
            ctx.err.write(f"podctl: {exc.message}\n")
        return FAILED
    if not ctx.args.quiet:
        ctx.out.write(answer.text().rstrip("\n") + "\n")
    return OK if answer.status == 200 else FAILED


# --- helpers -------------------------------------------------------------------------------


def services_of(answer: Any) -> list[dict[str, Any]]:
    services = answer.get("services") if isinstance(answer, dict) else None
    if not isinstance(services, list) or not all(isinstance(s, dict) for s in services):
        raise PodctlError(FAILED, "the pod's answer has no list of services (an older engine?)")
    return services


def select(services: list[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """The services named, in the order named (all when none are); unknown names: exit 4."""
    if not names:
        return services
    by_name = {s.get("name"): s for s in services}
    unknown = [n for n in dict.fromkeys(names) if n not in by_name]
    if unknown:
        known = ", ".join(sorted(str(n) for n in by_name)) or "none"
        missing = ", ".join(repr(n) for n in unknown)
        raise PodctlError(UNREACHABLE, f"no service named {missing} (known: {known})")
    return [by_name[n] for n in dict.fromkeys(names)]


def said(name: str, message: str) -> str:
    """The pod's message about `name`, which names the service itself ("theia: running, pid
    7, ready", "stop theia: accepted"); one that does not is given the name in front."""
    if name in message.partition(":")[0].split():
        return message
    return f"{name}: {message}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# healthz.digits's rule, kept here: podctl imports nothing it does not need (docs/PODCTL.md).
_ASCII_ONLY = "write numbers with the ASCII digits 0-9"


def _foreign_digits(text: str) -> bool:
    """A decimal digit int() and float() would take that is not 0-9 (full-width, Arabic-Indic)."""
    return any(ch.isdecimal() and not ch.isascii() for ch in text)


def _signal_arg(text: str) -> str:
    """HUP, SIGHUP, hup or 1 → the name the socket takes (HUP); a number with no name stays."""
    import signal

    if _foreign_digits(text):
        raise argparse.ArgumentTypeError(f"bad signal {text!r}: {_ASCII_ONLY}")
    if text.isascii() and text.isdecimal():
        number = int(text)
        if not 0 < number < signal.NSIG:
            raise argparse.ArgumentTypeError(f"no signal number {text} (1-{signal.NSIG - 1})")
        try:
            return signal.Signals(number).name.removeprefix("SIG")
        except ValueError:
            return text  # a real-time signal: by number
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in signal.Signals.__members__:
        raise argparse.ArgumentTypeError(
            f"bad signal {text!r}: give a name (HUP, SIGHUP) or a number (1-{signal.NSIG - 1})"
        )
    return name.removeprefix("SIG")


def _positive(text: str) -> float:
    if _foreign_digits(text):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}; "
                                         f"{_ASCII_ONLY}")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _count(text: str) -> int:
    if not (text.isascii() and text.isdecimal()):
        raise argparse.ArgumentTypeError(f"not a number of lines: {text!r}"
                                         + (f"; {_ASCII_ONLY}" if _foreign_digits(text) else ""))
    return int(text)


def build_parser() -> Parser:
    # Global options work before and after the verb: SUPPRESS keeps a subparser from
    # overwriting a value given before it with its default.
    common = Parser(add_help=False)
    common.add_argument(
        "--socket",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the control socket (default: $CODITECT_RUN/podctl.sock, /run/coditect/podctl.sock)",
    )
    common.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive,
        default=argparse.SUPPRESS,
        help=f"give up on the pod after this long (default: {READ_TIMEOUT:g}s for questions, "
        f"{VERB_TIMEOUT:g}s for an order waited on)",
    )
    common.add_argument(
        "--home",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the .coditect directory; `logs` given it reads DIR/logs here, not through the pod "
        "(default: $CODITECT_HOME, /app/.coditect)",
    )
    parser = Parser(
        prog="podctl",
        description="See and steer the pod through its control socket.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, run: Callable[[Context], int], text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(
            name,
            help=text,
            description=text,
            epilog=EPILOG,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    sub = verb("status", cmd_status, "services: state, readiness, pid, uptime, restarts, CPU, MEM")
    sub.add_argument("names", nargs="*", metavar="NAME")
    sub.add_argument("--json", action="store_true", help="print the status as JSON")
    sub = verb("health", cmd_health, "per-service readiness and liveness verdicts, with reasons")
    sub.add_argument("names", nargs="*", metavar="NAME")
    sub.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    for name, text in (
        ("start", "start services and wait until they are up"),
        ("stop", "stop services and wait until they are down"),
        ("restart", "restart services and wait for the outcome"),
    ):
        sub = verb(name, cmd_order, text)
        sub.add_argument("names", nargs="+", metavar="NAME")
        sub.add_argument("--no-wait", action="store_true", help="return once the pod accepted")
    sub = verb("signal", cmd_order, "send a signal to services' process groups")
    sub.add_argument("sig", type=_signal_arg, metavar="SIG", help="HUP, SIGHUP or a number")
    sub.add_argument("names", nargs="+", metavar="NAME")
    sub.add_argument("--no-wait", action="store_true", help="return once the pod accepted")
    sub = verb("logs", cmd_logs, "a service's log, read by the pod over the socket (-f to "
               "follow); with --home DIR, or when no pod answers, from DIR/logs here")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument(
        "-n",
        "--lines",
        type=_count,
        default=10,
        metavar="LINES",
        help="how many lines from the end (default 10)",
    )
    sub.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing new lines, across rotation, until Ctrl-C or SIGTERM",
    )
    sub = verb("run", cmd_run, "run a command as a transient service of the pod, past the "
               "IDE's restarts (NAME … -- COMMAND…); podctl stop NAME ends it")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--directory", metavar="DIR",
                     help="where the command runs (default: this shell's directory)")
    sub.add_argument("--env", metavar="K=V", action="append", default=[],
                     help="a variable added to the pod's environment (repeatable); nothing "
                     "of this shell's environment is passed")
    sub.add_argument("command", nargs="*", metavar="COMMAND",
                     help="the command and its arguments, after --")
    verb("reload", cmd_reload, "re-read the catalogue and apply the difference")
    sub = verb("validate", cmd_validate, "check the catalogue (exit 78: invalid): without DIR "
               "the running pod checks its own, with its overlay and environment; with DIR, "
               "or when no pod answers, it is checked here, in this shell's environment")
    sub.add_argument(
        "dir", nargs="?", metavar="DIR",
        help="check this catalogue here instead of asking the pod (default: the pod's; with "
        "no pod, CODITECT_CATALOGUE or the packaged one)",
    )
    sub = verb("doctor", cmd_doctor, "check the pod and the image, with or without a pod")
    sub.add_argument(
        "--strict", action="store_true", help="treat every recommended item as required"
    )
    sub.add_argument("--catalogue", metavar="DIR", help="check this catalogue here (default: "
                     "ask the running pod to check its own; with no pod, check it here)")
    from healthz.podctl_observe import add_verbs  # top, timeline, events, ports

    add_verbs(verb)
    sub = verb("is-ready", cmd_is_ready, "exit 0 when /readyz answers 200, else 1")
    sub.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    return parser


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """`run`'s command is everything after the first `--`, options of its own included:
    argparse would take `-c` or `--env` there for podctl's. Other verbs keep their `--`."""
    words = list(argv)
    if "--" in words and "run" in words[:words.index("--")]:
        at = words.index("--")
        return words[:at], words[at + 1:]
    return words, []


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    words, command = split_command(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(words)
    except SystemExit as done:  # --help, or a usage error already printed
        return done.code if isinstance(done.code, int) else USAGE
    if args.verb == "run":
        args.command = [*args.command, *command]
    ctx = Context(args, os.environ if env is None else env)
    try:
        code: int = args.run(ctx)
        ctx.out.flush()
        return code
    except PodctlError as exc:
        ctx.err.write(f"podctl: {exc.message}\n")
        return exc.code
    except KeyboardInterrupt:
        ctx.err.write("podctl: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader left (`podctl logs x | head`): say nothing, and keep the interpreter's
        # final flush from complaining about the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return OK


if __name__ == "__main__":
    sys.exit(main())
