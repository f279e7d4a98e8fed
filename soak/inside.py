"""The soak's driver, run by `soak.cli` inside private network and mount namespaces: builds
the read-only sandbox, starts the pod as PID 1 (unprivileged), polls it, injects faults,
watches for zombies and memory growth, drains it, counts the log lines, and prints the
findings as one JSON object on stdout. Progress goes to stderr.

    python -m soak.inside --base DIR --user NAME --duration SECONDS --seed N
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench.pods import pid_in_namespace
from healthz.marks import RUN_MARK
from soak import logcheck, sandbox
from soak.errors import EXIT_SETUP, SoakError
from soak.faults import KINDS, Injector
from soak.pod import HEALTH_PORT, ROOT, SoakPod, wait_for
from soak.poller import Poller
from soak.watch import ZombieWatch
from start.boot import RELEASE_MEMORY_AFTER, TRIM_AFTER_WORK
from start.catalogue import ServiceSpec
from start.catalogue import load as load_catalogue

BOOT_DEADLINE = 60.0  # seconds from start to every service ready (a loaded machine)
SETTLE_AFTER_BOOT = RELEASE_MEMORY_AFTER + 1  # the engine's first heap trim: measure after it
# After work (a fault: a flood, restarts) the engine trims its heap TRIM_AFTER_WORK later, and
# not again until more work comes: measure once that trim has happened.
SETTLE_AFTER_WORK = TRIM_AFTER_WORK + 1
DRAIN_DEADLINE = 40.0  # the engine's own default is 25 s
PAUSE = (0.2, 1.0)  # seconds between two faults, drawn at random


def progress(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


def catalogue_specs(box: sandbox.Sandbox) -> dict[str, ServiceSpec]:
    environ = {**os.environ, "CODITECT_HOME": str(box.home), "CODITECT_RUN": str(box.run),
               "CODITECT_WORKSPACE": str(box.workspace), "JWT_SECRET": "x",
               "FDB_CLUSTER_FILE": str(ROOT / "demo" / "fdb.cluster"),
               "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    catalogue = load_catalogue(ROOT / "demo" / "soak", overlay=ROOT / "demo" / "overlay.conf",
                               environ=environ)
    return {spec.name: spec for spec in catalogue.services}


def all_ready(pod: SoakPod) -> bool:
    if not pod.alive():
        raise SoakError(f"the pod exited during boot: {pod.why()}")
    with contextlib.suppress(Exception):
        return all(s["state"] == "running" and s["ready"] for s in pod.status().values())
    return False


def leaked(pod: SoakPod) -> list[str]:
    """Processes of the namespace in no current service's process group (nor PID 1): what a
    killed run left behind. Asked twice, a second apart, so a spawn in flight is not one."""
    def strays() -> dict[int, str]:
        groups = {pod.host_pid(int(s["pid"])) for s in pod.status().values() if s["pid"]}
        found = {}
        for proc in pod.tree()[1:]:
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(proc.pid) not in groups:
                    found[proc.pid] = " ".join(proc.cmdline())[:80]
        return found

    first = strays()
    time.sleep(1.0)  # the second look, not a wait for anything
    second = strays()
    return [f"{pid}: {first[pid]}" for pid in first if pid in second]


def _run_mark(proc: psutil.Process) -> str | None:
    with contextlib.suppress(psutil.Error, OSError):
        return proc.environ().get(RUN_MARK)
    return None


def dead_runs(pod: SoakPod) -> list[str]:
    """Processes of the namespace carrying the mark of a run that is no longer a service's
    current one: what a stop or an exit should have ended. Asked twice, a second apart."""
    def marked_by_dead_runs() -> dict[int, str]:
        current = set()
        for service in pod.status().values():
            host = pod.host_pid(int(service["pid"])) if service["pid"] else None
            if host is not None:
                current.add(_run_mark(psutil.Process(host)))
        found = {}
        for proc in pod.tree()[1:]:
            mark = _run_mark(proc)
            if mark is not None and mark not in current:
                with contextlib.suppress(psutil.Error):
                    found[proc.pid] = f"{mark}: {' '.join(proc.cmdline())[:60]}"
        return found

    first = marked_by_dead_runs()
    time.sleep(1.0)  # the second look, not a wait for anything
    second = marked_by_dead_runs()
    return [f"{pid}: {first[pid]}" for pid in first if pid in second]


def run(args: argparse.Namespace) -> dict[str, Any]:
    account = sandbox.Account.named(args.user)
    sandbox.loopback_up()
    needed = [ROOT, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]
    box = sandbox.build(args.base, account, list(dict.fromkeys(needed)))
    os.environ["TMPDIR"] = str(box.tmp)  # everything else is read-only now, /tmp included
    specs = catalogue_specs(box)
    writable = ", ".join(map(str, box.writable))
    progress(f"sandbox ready: root filesystem read-only but {writable}; "
             f"the pod runs as {account.name} (uid {account.uid})")
    pod = SoakPod(box, account)
    poller = Poller(HEALTH_PORT)
    zombies = ZombieWatch(pod)
    report: dict[str, Any] = {"duration": args.duration, "seed": args.seed,
                              "user": account.name, "uid": account.uid,
                              "writable": [str(p) for p in box.writable]}
    injector = Injector(pod, specs, box.run / "soak-crashes", args.seed, time.monotonic())
    try:
        _soak(args, pod, poller, zombies, injector, report)
    except SoakError as error:  # the pod, not the machine, failed: a finding, not a setup error
        report["error"] = str(error)
        progress(f"FAILED: {error}")
    finally:
        poller.stop()
        zombies.stop()
        pod.close()
    report["faults"] = [f.summary() for f in injector.faults]
    report["probes"] = {path: t.summary() for path, t in poller.tallies.items()}
    report["zombies"] = zombies.summary()
    report["restarts"] = len(pod.events_named("spawned")) - len(specs)
    report["owned_by_user_after"] = [p.pid for p in psutil.process_iter(["uids"])
                                     if p.info["uids"] and p.info["uids"].real == account.uid]
    report["log_file_failures"] = len(pod.events_named("log_file_failed"))
    backups = {name: spec.logfile_backups for name, spec in specs.items()}
    report["logs"] = {name: found.summary()
                      for name, found in logcheck.check(box.home / "logs", backups).items()}
    report["kill9_by_service"] = _count(injector.faults, "kill-9", "crash-loop")
    return report


def _soak(args: argparse.Namespace, pod: SoakPod, poller: Poller, zombies: ZombieWatch,
          injector: Injector, report: dict[str, Any]) -> None:
    booted = time.monotonic()
    pid1 = pod.pid1
    wait_for(lambda: all_ready(pod), BOOT_DEADLINE, "every service ready", 0.1)
    report["boot_seconds"] = round(time.monotonic() - booted, 2)
    report["pid1_is_pid_1"] = pid_in_namespace(pid1) == 1
    report["pid1_uid"] = psutil.Process(pid1).uids().real
    progress(f"pod ready in {report['boot_seconds']}s; polling /livez and /readyz at 20 Hz")
    poller.start()
    zombies.start()
    injector.began = began = time.monotonic()
    until = began + args.duration
    # Warm-up: one fault of each kind, so whatever the engine builds on first use is built
    # before the RSS baseline; and the heap trim 10 s after boot has happened.
    for kind in KINDS:
        _inject(injector, pod, kind)
    wait_for(lambda: time.monotonic() - booted > SETTLE_AFTER_BOOT, 30, "the heap trim")
    _wait_trimmed(pod, "after the warm-up")
    report["rss_warm"] = pod.rss()
    progress(f"warm-up done: RSS {report['rss_warm'] / 2**20:.1f} MiB; faults until "
             f"{args.duration:g}s")
    while time.monotonic() < until:
        _inject(injector, pod, None)
        time.sleep(injector.random.uniform(*PAUSE))  # the chaos's own rhythm
    # Freed but not yet trimmed heap (a flood's read and stdout buffers) is not a leak: the end
    # is measured after the heap trim that follows the last fault, as the baseline was.
    _wait_trimmed(pod, "after the last fault")
    report["rss_end"] = pod.rss()
    report["leaked"] = leaked(pod)
    report["strays"] = dead_runs(pod)
    poller.stop()
    zombies.stop()
    report["supervisor_alive"] = pod.alive() and psutil.pid_exists(pid1)
    report["stdout"] = {"bytes": pod.stdout_bytes, "lines": pod.stdout_lines}
    code, took = pod.drain(DRAIN_DEADLINE)
    report["drain"] = {"exit_code": code, "seconds": round(took, 2)}
    progress(f"drained in {took:.2f}s, exit code {code}")


def _wait_trimmed(pod: SoakPod, when: str) -> None:
    """Every service ready again, then past the heap trim that the recovery's work armed."""
    wait_for(lambda: all_ready(pod), 60, f"every service ready {when}", 0.1)
    settled = time.monotonic() + SETTLE_AFTER_WORK
    wait_for(lambda: time.monotonic() > settled, SETTLE_AFTER_WORK + 5, "the heap trim after work")


def _inject(injector: Injector, pod: SoakPod, kind: str | None) -> None:
    if not pod.alive():
        raise SoakError(f"the supervisor died: {pod.why()}")
    fault = injector.next_fault(kind)
    if fault is not None:
        took = "not ready again" if fault.recovered_in is None else f"{fault.recovered_in:.2f}s"
        progress(f"{fault.at:7.1f}s {fault.kind:<10} {fault.service:<16} ready again in "
                 f"{took} (bound {fault.bound:g}s) {fault.detail}")


def _count(faults: list[Any], *kinds: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for fault in faults:
        if fault.kind in kinds:
            counts[fault.service] = counts.get(fault.service, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak.inside")
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except SoakError as error:
        print(f"soak: {error}", file=sys.stderr)
        return EXIT_SETUP
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
