"""`coditect-file-monitor ROOT …`: flags, start-up, signals, exit codes.

Exit codes: 0 stopped by SIGTERM/SIGINT after writing out every queued event; 2 usage
(argparse); 1 runtime failure (ROOT missing at start, events log or metrics address unusable).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from wsgiref.simple_server import WSGIServer

from coditect_file_monitor import diag
from coditect_file_monitor.diag import say
from coditect_file_monitor.metrics import parse_addr, serve
from coditect_file_monitor.monitor import Monitor, Settings
from coditect_file_monitor.sink import RotatingFileSink, Sink, StreamSink

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_BACKUPS = 5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _ascii_digits(value: str) -> str:
    """float() and int() take a full-width or an Arabic-Indic 15 as 15: a flag is written in
    0-9 or refused."""
    if any(ch.isdecimal() and not ch.isascii() for ch in value):
        raise argparse.ArgumentTypeError(f"{value!r}: write numbers with the ASCII digits 0-9")
    return value


def _positive_float(value: str) -> float:
    number = float(_ascii_digits(value))
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _count(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(_ascii_digits(value))
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return number

    parse.__name__ = "integer"
    return parse


def _addr(value: str) -> tuple[str, int]:
    try:
        return parse_addr(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="coditect-file-monitor",
        description="Record every change under ROOT as one JSON line (the workspace audit trail).",
    )
    p.add_argument("root", metavar="ROOT", help="directory to watch")
    p.add_argument("--recursive", action="store_true", help="watch subdirectories too")
    p.add_argument("--checksums", action="store_true", help="add the sha256 of each file")
    p.add_argument("--format", choices=("json", "text"), default="json",
                   help="json: one JSON object a line (default); text: one readable line")
    p.add_argument("--events-log", metavar="PATH", help="append events here (default: stdout)")
    p.add_argument("--events-log-max-bytes", metavar="N", type=_count(0),
                   default=DEFAULT_MAX_BYTES,
                   help="rotate the events log before it grows past N bytes; 0 never "
                        "(default: 50 MiB)")
    p.add_argument("--events-log-backups", metavar="N", type=_count(1), default=DEFAULT_BACKUPS,
                   help=f"rotated files kept: PATH.1 … PATH.N (default: {DEFAULT_BACKUPS})")
    p.add_argument("--trace-log", metavar="PATH",
                   help="also write the monitor's own diagnostics here, debug level included")
    p.add_argument("--ignore", metavar="A,B,C", action="append", default=[],
                   help="skip paths with a component named A, B or C (globs allowed), at any "
                        "depth; may be repeated")
    p.add_argument("--poll", action="store_true",
                   help="poll the tree instead of using inotify (network file systems)")
    p.add_argument("--poll-interval", metavar="SECONDS", type=_positive_float, default=1.0,
                   help="seconds between two polls (default: 1)")
    p.add_argument("--metrics-addr", metavar="HOST:PORT", type=_addr,
                   help="serve /metrics and the liveness probe /healthz here (port 0: any)")
    p.add_argument("--queue-size", metavar="N", type=_count(1), default=10_000,
                   help="changes held before new ones are dropped and counted (default: 10000)")
    p.add_argument("--coalesce-window", metavar="SECONDS", type=_positive_float, default=0.1,
                   help="a path quiet this long is reported; changes within it are one event "
                        "(default: 0.1)")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    parts = (part.strip() for value in args.ignore for part in value.split(","))
    ignore = tuple(part for part in parts if part)
    return Settings(
        root=os.path.realpath(args.root),
        recursive=args.recursive,
        checksums=args.checksums,
        format=args.format,
        events_log=args.events_log,
        trace_log=args.trace_log,
        ignore=ignore,
        poll_interval=args.poll_interval if args.poll else None,
        fallback_poll_interval=args.poll_interval,
        queue_size=args.queue_size,
        coalesce_window=args.coalesce_window,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    log = diag.setup(settings.trace_log, max_bytes=args.events_log_max_bytes,
                     backups=args.events_log_backups)
    if not os.path.isdir(settings.root):
        say(log, logging.ERROR, "ROOT is not a directory", root=settings.root)
        return 1

    sink: Sink
    if settings.events_log:
        rotating = RotatingFileSink(settings.events_log, max_bytes=args.events_log_max_bytes,
                                    backups=args.events_log_backups)
        try:
            rotating.open()
        except OSError as exc:
            say(log, logging.ERROR, "cannot open the events log", path=settings.events_log,
                error=str(exc))
            return 1
        sink = rotating
    else:
        sink = StreamSink()

    monitor = Monitor(settings, sink, log)
    server: WSGIServer | None = None
    shown_addr = None
    if args.metrics_addr is not None:
        try:
            server, shown_addr = serve(args.metrics_addr, monitor.metrics, monitor.healthy)
        except OSError as exc:
            say(log, logging.ERROR, "cannot serve metrics", addr=args.metrics_addr,
                error=str(exc))
            return 1

    def record(signum: int, frame: FrameType | None) -> None:
        monitor.request_stop(signum)

    previous = {sig: signal.signal(sig, record) for sig in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(monitor.wakeup.fd)
    try:
        try:
            monitor.start()
        except OSError as exc:
            say(log, logging.ERROR, "cannot watch ROOT", root=settings.root, error=str(exc))
            monitor.shutdown()
            return 1
        say(log, logging.INFO, "watching", root=settings.root, observer=monitor.observer_kind,
            recursive=settings.recursive, checksums=settings.checksums,
            events_log=settings.events_log, metrics_addr=shown_addr, pid=os.getpid())
        monitor.run()
        say(log, logging.INFO, "stopping, writing out queued events",
            signal=signal.Signals(monitor.stop_signal or signal.SIGTERM).name,
            queued=monitor.coalescer.depth)
        monitor.shutdown()
        say(log, logging.INFO, "stopped", dropped_total=monitor.coalescer.dropped)
        return 0
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        monitor.wakeup.close()
        if server is not None:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
