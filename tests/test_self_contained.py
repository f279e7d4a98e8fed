"""The repository stands on its own: nothing in it points at a path outside it, at the
tracker's issues or at the machine it was written on."""

from __future__ import annotations

import re
import subprocess

from tests.support import ROOT

# What a reader of this repository cannot follow: the sibling directory of the first design,
# that design file itself, numbered issues, and machine paths.
FORBIDDEN = re.compile(
    # Spelled in pieces so that this file does not name what it looks for.
    r"\.\./" + "shared|" + "DES" + r"IGN\.md"
    r"|\bissues? #?\d+|\(#\d+\)|/work/|/root/|/home/\w+/",
    re.IGNORECASE,
)


def test_nothing_points_outside_the_repository() -> None:
    """No tracked text file names the design folder outside the repository, its design file, an
    issue number or a machine path."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    hits = []
    for name in filter(None, files):
        path = ROOT / name
        if name == "tests/test_self_contained.py" or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not hits, "\n".join(hits)
