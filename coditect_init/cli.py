"""python -m coditect_init: prepare the home and say what was done."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import EX_OK, InitError
from .home import prepare

PROG = "coditect_init"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="Create or complete the .coditect home from the image's template. "
                    "Existing files are kept; settings.json gains only missing keys.",
        epilog="exit codes: 0 ok, 2 usage, 65 wrong kind of entry or symlink out of the home, "
               "66 template missing or unreadable, 67 unknown user, 73 home not writable, "
               "74 disk full or I/O error, 75 another run holds the lock")
    p.add_argument("--home", type=Path, default=_env_path("CODITECT_HOME"),
                   help="the home directory (default: $CODITECT_HOME)")
    p.add_argument("--template", type=Path, default=_env_path("CODITECT_TEMPLATE"),
                   help="the template directory (default: $CODITECT_TEMPLATE; without one "
                        "only the bare layout is made)")
    p.add_argument("--user", help="give created files to this user (name or uid; needs root)")
    p.add_argument("--dry-run", action="store_true", help="say what would be done; write nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="list every file kept")
    return p


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.home is None or not str(args.home):
        parser.error("--home is required (or set CODITECT_HOME)")
    try:
        report = prepare(args.home, args.template, user=args.user, dry_run=args.dry_run)
    except InitError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    for line in report.lines(verbose=args.verbose):
        print(line)
    if args.template is None:
        print(f"{PROG}: warning: no template given; only the bare layout was made",
              file=sys.stderr)
    for warning in report.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    return EX_OK
