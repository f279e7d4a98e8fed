"""A catalogue parsed in a process of its own: the child half of a reload (`start.reparse`).

PID 1 serves /livez from one event loop, and a parse is CPU the loop cannot take back: a
hostile or merely huge catalogue held it for seconds, and a thread cannot be stopped. So a
reload runs this module in a child that PID 1 can kill at its time limit, under a memory limit
the kernel enforces (RLIMIT_AS, set before this runs). The environment the catalogue expands is
the child's own, which is PID 1's.

Its answer, on stdout, is one pickle (as the catalogue cache stores a catalogue): `("valid",
Catalogue)`, `("invalid", [problem, …])`, or `("failed", "one line")` for an exception the
parser should never raise. Out of memory it writes nothing and exits EXIT_OUT_OF_MEMORY: the
answer itself would need memory.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

EXIT_OUT_OF_MEMORY = 3
# The child's command line: the directory holding the `start` package comes first, so that the
# child runs the code PID 1 runs, however PID 1 was started (installed, or from a checkout).
BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv[1]); "
             "from start.catalogue.isolated import main; main(sys.argv[2:])")


def main(argv: list[str]) -> None:
    """`argv`: the catalogue's location, then the overlay ("" for none)."""
    location, overlay = argv
    try:
        from start.catalogue import load
        from start.errors import ConfigError

        try:
            answer: tuple[str, object] = ("valid", load(
                Path(location), overlay=Path(overlay) if overlay else None))
        except ConfigError as error:
            answer = ("invalid", error.problems)
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)
    except Exception as error:  # a bug in the parser: said in one line, never a traceback
        data = pickle.dumps(("failed", f"{type(error).__name__}: {error}"[:500]))
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    os._exit(0)  # nothing to tear down: the answer is written
