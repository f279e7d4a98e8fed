"""`coditect-start`: the container's CMD. Argument parsing and settings only; fast to import."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from healthz.digits import ASCII_ONLY, foreign_digits
from start.catalogue import load as load_catalogue
from start.catalogue.cache import CatalogueCache
from start.childenv import forget_secrets, withheld_here
from start.early import kill_unadopted, prepare_directories, spawn_first_wave
from start.errors import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    ConfigError,
    report_invalid,
)
from start.settings import RELOAD_MEMORY_MIB, RELOAD_SECONDS, ReloadLimits, Settings
from start.stopsignals import keep_signals, release_signals
from start.termination import choose
from start.termination import write as write_termination_message

EPILOG = """\
environment (a flag wins over its variable):
  CODITECT_CATALOGUE          catalogue directory (supervisord.conf + conf.d/)
  CODITECT_CATALOGUE_OVERLAY  file whose sections replace keys of the catalogue's (the demo)
  CODITECT_HOME               the .coditect state directory (default /app/.coditect)
  CODITECT_TEMPLATE           the image's copy of .coditect, seeded from on boot
  CODITECT_RUN                runtime files and podctl.sock (default /run/coditect)
  CODITECT_HEALTH_ADDR        health listener HOST:PORT (default 0.0.0.0:8081)
  CODITECT_DRAIN_TIMEOUT      seconds the SIGTERM drain may take (default 25)
  CODITECT_LOG_FORMAT         json | console | auto (default auto: console on a TTY)
  CODITECT_TERMINATION_LOG    file for the one-line reason of the exit (default
                              /dev/termination-log when it exists and is writable;
                              empty: none)
  CODITECT_RELOAD_TIMEOUT     seconds a reload's parse may take (default 30)
  CODITECT_RELOAD_MEMORY      MiB of memory a reload's parse may use (default 256)

the catalogue's keys and sections: coditect-start --help-catalogue

exit codes:
  0   drained: every child stopped inside the deadline
  1   runtime failure (.coditect unusable, health port taken, another pod on the
      run directory), or the drain deadline had to SIGKILL what was left
  2   usage error
  78  invalid catalogue: nothing was started
"""


def default_catalogue() -> Path:
    """The catalogue installed with the package, beside the code that reads it."""
    found = importlib.util.find_spec("coditect_pod_catalogue")
    if found is not None and found.submodule_search_locations:
        return Path(next(iter(found.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "supervisor"


class _CatalogueReference(argparse.Action):
    """`--help-catalogue`: the catalogue's reference, shipped in the package (start.reference)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from start.reference import catalogue_reference

        sys.stdout.write(catalogue_reference())
        parser.exit()


def parse_args(argv: list[str] | None, environ: dict[str, str]) -> Settings:
    parser = argparse.ArgumentParser(
        prog="coditect-start",
        description="PID 1 of a Coditect pod: prepares .coditect, starts and supervises the "
        "services of the catalogue, serves their health.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = environ.get
    catalogue = default_catalogue()
    parser.add_argument("--catalogue", type=Path, default=env("CODITECT_CATALOGUE"),
                        metavar="DIR", help="catalogue directory (supervisord.conf + conf.d/) "
                        "or a supervisord.conf; default: the production catalogue installed "
                        f"with this package, {catalogue}")
    parser.add_argument("--overlay", type=Path, default=env("CODITECT_CATALOGUE_OVERLAY"),
                        metavar="FILE", help="a file whose sections replace keys of the "
                        "catalogue's or add services (the demo's stand-ins); default: none")
    parser.add_argument("--home", type=Path, default=env("CODITECT_HOME", "/app/.coditect"),
                        metavar="DIR", help="the persistent .coditect state directory: "
                        "logs/<service>.log, settings.json, … (default: /app/.coditect)")
    parser.add_argument("--template", type=Path, default=env("CODITECT_TEMPLATE"),
                        metavar="DIR", help="the image's copy of .coditect: what is missing "
                        "from --home is seeded from it on every boot, a user's file never "
                        "overwritten; default: none, nothing seeded")
    parser.add_argument("--run-dir", type=Path, default=env("CODITECT_RUN", "/run/coditect"),
                        metavar="DIR", help="runtime files: podctl's control socket "
                        "podctl.sock and the catalogue cache of a warm boot "
                        "(default: /run/coditect)")
    parser.add_argument("--health-addr", default=env("CODITECT_HEALTH_ADDR", "0.0.0.0:8081"),
                        metavar="HOST:PORT", help="where the probes and /metrics are served "
                        "(default: 0.0.0.0:8081; port 0 picks a free one)")
    parser.add_argument("--drain-timeout", default=env("CODITECT_DRAIN_TIMEOUT", "25"),
                        metavar="SECONDS", help="how long the drain after SIGTERM may take "
                        "before what is left is SIGKILLed; keep it below the pod's "
                        "terminationGracePeriodSeconds (default: 25)")
    parser.add_argument("--log-format", choices=("json", "console", "auto"),
                        default=env("CODITECT_LOG_FORMAT", "auto"),
                        help="stdout: one JSON object a line, or coloured lines for a person; "
                        "auto: console on a TTY, else json (default: auto)")
    parser.add_argument("--termination-log", default=env("CODITECT_TERMINATION_LOG"),
                        metavar="PATH", help="write why the pod exited here, one line "
                        "(Kubernetes' terminationMessagePath; default: /dev/termination-log "
                        "when it exists and is writable, '' for none)")
    parser.add_argument("--check", action="store_true",
                        help="validate the catalogue and exit (0 valid, 78 invalid)")
    parser.add_argument("--help-catalogue", action=_CatalogueReference, nargs=0,
                        help="print the catalogue's reference (its sections and keys) and exit")
    args = parser.parse_args(argv)
    try:
        if foreign_digits(args.drain_timeout):  # float() reads a full-width 25 as 25
            raise ValueError
        drain_timeout = float(args.drain_timeout)
        if not 0 < drain_timeout < 3600:
            raise ValueError
    except ValueError:
        parser.error(f"--drain-timeout: {args.drain_timeout!r} is not a number of seconds "
                     f"between 0 and 3600 ({ASCII_ONLY})")
    if args.log_format not in ("json", "console", "auto"):
        parser.error(f"CODITECT_LOG_FORMAT: {args.log_format!r}; use json, console or auto")
    limits = ReloadLimits(
        seconds=_number(parser.error, environ, "CODITECT_RELOAD_TIMEOUT", RELOAD_SECONDS,
                        "seconds", 3600),
        memory_mib=int(_number(parser.error, environ, "CODITECT_RELOAD_MEMORY",
                               RELOAD_MEMORY_MIB, "MiB", 1 << 20)))
    return Settings(
        catalogue=args.catalogue or catalogue,
        overlay=args.overlay,
        home=args.home,
        template=args.template,
        run_dir=args.run_dir,
        health_addr=args.health_addr,
        drain_timeout=drain_timeout,
        log_format=args.log_format,
        check_only=args.check,
        termination_log=choose(args.termination_log),
        reload_limits=limits,
    )


def _number(error: Callable[[str], NoReturn], environ: dict[str, str], name: str,
            default: float, unit: str, largest: int) -> float:
    """A positive number from the environment variable `name`, or `default` when unset."""
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text) if unit == "seconds" else int(text)
        if not 0 < value <= largest:
            raise ValueError
    except ValueError:
        whole = "" if unit == "seconds" else "whole "
        error(f"{name}: {text!r} is not a {whole}number of {unit} between 0 and {largest}")
    return value


def main(argv: list[str] | None = None) -> None:
    code = run(argv)
    # Everything is stopped, reaped and written by now. Tearing down the interpreter (GC of
    # aiohttp and friends) would add ~100 ms to every pod shutdown for nothing: exit at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(argv: list[str] | None = None) -> int:
    environ = dict(os.environ)
    try:
        settings = parse_args(argv, environ)
    except SystemExit as exit_:
        release_signals()
        return EXIT_USAGE if exit_.code not in (0, None) else EXIT_OK
    # Children expand %(ENV_CODITECT_*)s in the catalogue: give them the resolved values.
    resolved = {"CODITECT_HOME": str(settings.home), "CODITECT_RUN": str(settings.run_dir),
                "CODITECT_WORKSPACE": environ.get("CODITECT_WORKSPACE", "/workspace")}
    environ.update(resolved)
    os.environ.update(resolved)
    withheld: list[str] = []
    if settings.check_only:
        release_signals()  # a check is interrupted as any command is
        withheld = withheld_here(environ)
    else:
        keep_signals()  # already, from start.entry; again for a caller of run() itself

    # A warm boot (a container restart: $CODITECT_RUN survives it) takes the catalogue it
    # parsed last time, if nothing it depended on changed, and spawns without importing the
    # parser; the engine parses again once the children are on their way.
    cache = CatalogueCache(settings.run_dir, settings.catalogue, settings.overlay, environ)
    catalogue = None if settings.check_only else cache.load()
    warm = catalogue is not None
    if catalogue is None:
        try:
            catalogue = load_catalogue(settings.catalogue, overlay=settings.overlay,
                                       environ=environ)
        except ConfigError as error:
            report_invalid(error.problems)
            if settings.termination_log is not None and not settings.check_only:
                count = len(error.problems)
                write_termination_message(settings.termination_log, (
                    f"catalogue invalid: {error.problems[0]}"
                    + (f" (and {count - 1} more)" if count > 1 else "")))
            return EXIT_CONFIG
    if settings.check_only:
        from start.catalogue.checks import liveness_warnings
        from start.catalogue.exposure import exposure_warnings

        for note in catalogue.notes:
            sys.stdout.write(f"note: {note}\n")
        if withheld:
            sys.stdout.write(f"note: {', '.join(withheld)}: withheld from this environment by "
                             "the pod (secrets=), taken as set\n")
        for warning in [*liveness_warnings(list(catalogue.services)),
                        *exposure_warnings(catalogue.services)]:
            sys.stdout.write(f"warning: {warning}\n")
        names = ", ".join(s.name for s in catalogue.services)
        sys.stdout.write(f"catalogue valid: {len(catalogue.services)} services ({names})\n")
        return EXIT_OK

    # PID 1 keeps the secrets only in `environ`, which hands each to the services that name it.
    forget_secrets(catalogue.secret_names)
    failed = prepare_directories(settings)
    if failed is not None:
        return failed
    # The services that wait for nothing start now, before the engine is even imported; it
    # adopts them as it boots (start/early.py).
    spawned = spawn_first_wave(catalogue, environ)
    try:
        # Boot speed: asyncio and the engine (~30 ms) only once the first wave is spawned.
        from start.engine import boot_and_run

        return boot_and_run(settings, catalogue, environ, cache=cache, warm=warm,
                            spawned=spawned)
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    finally:
        kill_unadopted(spawned)  # only if the engine failed before adopting them
