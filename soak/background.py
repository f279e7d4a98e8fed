"""A watcher that runs in a thread of its own for the length of the soak."""

from __future__ import annotations

import threading


class Background:
    """`start()` runs `_run()` in a daemon thread; `_run` returns once `_stop` is set."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        raise NotImplementedError
