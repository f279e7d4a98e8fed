"""The soak's verdicts, each a property of the issue (docs/SOAK.md), and how they print."""

from __future__ import annotations

from typing import Any

RSS_GROWTH_LIMIT = 0.05  # the supervisor's RSS may grow by less than 5 % from warm-up to end


def verdicts(report: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """Property → (held, what was measured)."""
    livez = report.get("probes", {}).get("/livez", {})
    readyz = report.get("probes", {}).get("/readyz", {})
    faults = report.get("faults", [])
    late = [f for f in faults if not f["within_bound"]]
    logs = report.get("logs", {})
    lost = sum(s["lost"] for s in logs.values())
    doubled = sum(s["duplicates"] for s in logs.values())
    warm, end = report.get("rss_warm"), report.get("rss_end")
    growth = (end - warm) / warm if warm and end else None
    drain = report.get("drain", {})
    leaked = report.get("leaked", ["(not measured)"])
    zombies = report.get("zombies", {}).get("lingering", ["(not measured)"])
    strays = report.get("strays", ["(not measured)"])
    stray_faults = [f for f in faults if f["kind"] == "stray"]
    strays_left = [f for f in stray_faults if f.get("stray_left")]
    not_answered = livez.get("sent", 0) - livez.get("statuses", {}).get("200", 0)
    return {
        "supervisor never died": (
            bool(report.get("supervisor_alive")) and report.get("pid1_is_pid_1") is True
            and drain.get("exit_code") == 0,
            f"PID 1 alive to the end, drained in {drain.get('seconds')}s with exit code "
            f"{drain.get('exit_code')}"),
        "/livez always answered": (
            livez.get("sent", 0) > 0 and not_answered == 0,
            f"{livez.get('sent', 0)} requests: {livez.get('refused', 0)} refused, "
            f"{livez.get('timed_out', 0)} over the 1 s probe timeout, statuses "
            f"{livez.get('statuses')}, p99 {livez.get('p99_ms')} ms, slowest "
            f"{livez.get('slowest_ms')} ms"),
        "/readyz always answered": (
            readyz.get("sent", 0) > 0 and readyz.get("refused", 1) == 0
            and readyz.get("timed_out", 1) == 0,
            f"{readyz.get('sent', 0)} requests, statuses {readyz.get('statuses')}, "
            f"slowest {readyz.get('slowest_ms')} ms"),
        "ready again within bound after every fault": (
            bool(faults) and not late,
            f"{len(faults)} faults, {len(late)} late"
            + "".join(f"; {f['kind']} {f['service']}: {f['recovered_in']}s > {f['bound']}s"
                      for f in late[:5])),
        "no zombies, no leaked processes": (
            not zombies and not leaked and not report.get("owned_by_user_after", [1]),
            f"{report.get('zombies', {}).get('seen', 0)} zombies seen and reaped, lingering "
            f"{zombies}; leaked {leaked}; processes of the user left "
            f"{report.get('owned_by_user_after')}"),
        "no strays (processes of a dead run)": (
            not strays and not strays_left,
            f"{len(stray_faults)} runs killed with a setsid grandchild, {len(strays_left)} "
            f"grandchildren left; at the end, processes with a dead run's mark: {strays}"),
        "no log line lost or doubled": (
            bool(logs) and lost == 0 and doubled == 0,
            f"{sum(s['lines'] for s in logs.values())} numbered lines in "
            f"{sum(s['files'] for s in logs.values())} files, {lost} lost, {doubled} doubled"),
        "RSS grew < 5 %": (
            growth is not None and growth < RSS_GROWTH_LIMIT,
            "not measured" if growth is None or not warm or not end else
            f"{warm / 2**20:.1f} MiB after warm-up, {end / 2**20:.1f} MiB at the end "
            f"({growth:+.1%})"),
    }


def passed(report: dict[str, Any]) -> bool:
    return "error" not in report and all(held for held, _ in verdicts(report).values())


def render(report: dict[str, Any]) -> str:
    lines = [f"soak: {report.get('duration')}s of faults, seed {report.get('seed')}, "
             f"pod as {report.get('user')} (uid {report.get('uid')}) on a read-only root, "
             f"writable only {', '.join(report.get('writable', []))}"]
    if "error" in report:
        lines.append(f"  ERROR  {report['error']}")
    kinds: dict[str, list[dict[str, Any]]] = {}
    for fault in report.get("faults", []):
        kinds.setdefault(fault["kind"], []).append(fault)
    for kind, faults in sorted(kinds.items()):
        times = [f["recovered_in"] for f in faults if f["recovered_in"] is not None]
        lines.append(f"  fault {kind:<10} ×{len(faults):<3} ready again in "
                     f"max {max(times, default=0):.2f}s (bounds "
                     f"{min(f['bound'] for f in faults):g}-{max(f['bound'] for f in faults):g}s)")
    for name, logs in sorted(report.get("logs", {}).items()):
        lines.append(f"  log   {name:<16} {logs['lines']:>8} lines, {logs['files']:>2} files, "
                     f"{logs['runs']:>3} runs ({logs['cut_by_sigkill']} cut by SIGKILL), "
                     f"{logs['lost']} lost, {logs['duplicates']} doubled")
    for name, (held, measured) in verdicts(report).items():
        lines.append(f"  {'PASS' if held else 'FAIL'}   {name}: {measured}")
    lines.append(f"soak: {'PASSED' if passed(report) else 'FAILED'}")
    return "\n".join(lines)
