"""Run the benchmarks: `python -m bench.run [--quick] [--only NAME ...] [--write FILE]`.

scripts/bench is the way in (it installs what is missing and gives the run a network
namespace of its own, so only its loopback is used and no port can collide with anything).
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.pods import close_all
from bench.report import machine, markdown, table, versions
from bench.results import Result
from bench.scenarios import Context, registry


def main(argv: list[str] | None = None) -> int:
    scenarios = registry()
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one repetition, small sizes: proves the harness works")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5; 1 quick)")
    parser.add_argument("--only", nargs="+", choices=sorted(scenarios), metavar="NAME",
                        help=f"run only these scenarios: {', '.join(scenarios)}")
    parser.add_argument("--write", type=Path, default=None, metavar="FILE",
                        help="write the markdown report here (scripts/bench: docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)

    # End every namespace we started, however the run ends (Ctrl-C, SIGTERM, an exception).
    atexit.register(close_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    reps = args.reps or (1 if args.quick else 5)
    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    ctx = Context(quick=args.quick, reps=reps, scratch=scratch, started=time.monotonic())
    results: list[Result] = []
    durations: dict[str, float] = {}
    try:
        for name in args.only or scenarios:
            ctx.say(f"scenario {name}")
            began = time.monotonic()
            try:
                results.extend(scenarios[name](ctx))
            except Exception as error:  # one broken scenario must not lose the others
                ctx.say(f"scenario {name} failed: {type(error).__name__}: {error}")
                close_all(report=ctx.say)
                results.append(Result(name, name, "", "", [], skipped=f"{type(error).__name__}: "
                                      f"{error}"))
            finally:
                close_all()
            durations[name] = time.monotonic() - began
    finally:
        close_all()
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.monotonic() - ctx.started
    print(table(results))
    print(f"\n{len(results)} results in {elapsed:.0f} s")
    if args.write is not None:
        kept = kept_section(args.write)
        args.write.write_text(markdown(results, machine(), versions(), elapsed, durations,
                                       quick=args.quick, reps=reps) + kept)
        print(f"wrote {args.write}")
    failed = [r for r in results if r.skipped]
    return 1 if failed and args.only else 0



# The real-IDE figures come from the end-to-end tests (tests/test_theia_e2e.py), not from this
# harness: a run keeps that section of the file as it was.
KEPT_HEADING = "\n## The real Eclipse Theia"


def kept_section(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError:
        return ""
    at = text.find(KEPT_HEADING)
    return "" if at < 0 else text[at:]


if __name__ == "__main__":
    sys.exit(main())
