"""`coditect-start`'s entry point: keep the stop signals first, then import the rest.

Importing `start.cli` (the catalogue reader, the spawner, argparse) takes ~30 ms, and a SIGTERM
in that time, with no handler of ours, was lost: PID 1 of a pod never sees it, and the pod
waited for the kubelet's SIGKILL. So the handler that keeps it comes before that import
(start.stopsignals).
"""

from __future__ import annotations


def main() -> None:
    from start.stopsignals import keep_signals

    keep_signals()
    from start.cli import main as run

    run()
