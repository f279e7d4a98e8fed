"""`python -m soak` (scripts/soak, make soak): the chaos soak of the demo pod.

Runs as root on the host: makes sure the unprivileged user exists, then runs the driver
(`soak.inside`) in private network and mount namespaces, so the demo's fixed ports clash with
nothing else on the machine and the read-only mounts are seen by nobody else. Prints the
report; exit 0 when every property held, 1 when one did not, 2 when it could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.pods import die_with_parent
from soak import report as report_
from soak.errors import EXIT_FAILED, EXIT_PASSED, EXIT_SETUP, SoakError
from soak.pod import ROOT

DEFAULT_USER = "coditect-soak"


def ensure_user(name: str) -> None:
    """The unprivileged user: created (system account, no home, no shell) when missing."""
    import pwd

    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                           "/usr/sbin/nologin", name], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SoakError(f"cannot create user {name!r}: {done.stderr.strip()}")


def preflight(user: str) -> None:
    if os.geteuid() != 0:
        raise SoakError("needs root: it makes PID, network and mount namespaces and mounts "
                        "(CI runs as root)")
    missing = [tool for tool in ("unshare", "setpriv", "mount", "nginx")
               if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        raise SoakError(f"missing {', '.join(missing)} (scripts/bootstrap installs nginx; "
                        "util-linux has the rest)")
    ensure_user(user)


def run_inside(args: argparse.Namespace) -> dict[str, object]:
    """The driver in its namespaces; its report (or SoakError with what it said)."""
    with tempfile.TemporaryDirectory(prefix="coditect-soak-") as base:
        os.chmod(base, 0o755)  # noqa: S103  # a directory other uids must traverse
        argv = ["unshare", "--net", "--mount", "--propagation", "private", "--kill-child",
                "--", sys.executable, "-m", "soak.inside", "--base", base, "--user", args.user,
                "--duration", str(args.duration), "--seed", str(args.seed)]
        done = subprocess.run(argv, stdout=subprocess.PIPE, cwd=ROOT, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              preexec_fn=die_with_parent)
    if done.returncode != 0 or not done.stdout.strip():
        raise SoakError(f"the soak driver failed (exit {done.returncode}); see above")
    found: dict[str, object] = json.loads(done.stdout)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/soak", description="Chaos soak of the demo pod as PID 1, unprivileged, "
        "on a read-only root filesystem (docs/SOAK.md).")
    parser.add_argument("--duration", type=float, default=600.0, metavar="SECONDS",
                        help="how long to inject faults (default 600)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed, to replay a run's choice of faults")
    parser.add_argument("--user", default=DEFAULT_USER,
                        help=f"unprivileged user to run the pod as (default {DEFAULT_USER}; "
                        "created when missing)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report here")
    args = parser.parse_args(argv)
    if args.duration < 20:
        parser.error("--duration: at least 20 seconds (the warm-up alone takes about 15)")
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    try:
        preflight(args.user)
        found = run_inside(args)
    except SoakError as error:
        print(f"soak: {error}", file=sys.stderr)
        return EXIT_SETUP
    print(report_.render(found))
    if args.json is not None:
        args.json.write_text(json.dumps({**found, "passed": report_.passed(found),
                                         "verdicts": report_.verdicts(found)}, indent=2) + "\n")
    return EXIT_PASSED if report_.passed(found) else EXIT_FAILED
