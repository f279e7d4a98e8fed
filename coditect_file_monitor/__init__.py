"""coditect-file-monitor: the workspace audit trail, on watchdog.

It watches ROOT and writes one JSON line per change (created, modified, deleted, moved) to
the events log, in the format and with the flags of the Rust ``file-monitor`` the pod runs in
the Coditect image. The modules read as the pipeline:

``watcher`` (watchdog → raw changes, ignore rules) → ``coalesce`` (bursts merged, bounded
queue) → ``monitor`` (the worker: ``checksum`` → ``events`` → ``sink``), with ``metrics``
and ``diag`` on the side and ``cli`` in front. See docs/FILE_MONITOR.md.
"""
