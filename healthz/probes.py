"""Probes: how the pod learns whether a service answers.

The public face of four small modules, each one concept:

- :mod:`healthz.probe_spec`: what a probe is (``parse_probe`` → :class:`ProbeSpec`), pure;
- :mod:`healthz.probe_run`: running one probe once (``run_probe`` → :class:`ProbeResult`);
- :mod:`healthz.probe_exec`: the swappable runner of ``exec:`` commands;
- :mod:`healthz.probe_loop`: one probe in the background with its cached verdict.

Importing this costs no aiohttp: it is imported when a web probe first runs.
"""

from healthz.freshness import STALE_AFTER_INTERVALS
from healthz.probe_exec import ExecOutcome, ExecRunner, SubprocessExecRunner
from healthz.probe_loop import ProbeLoop
from healthz.probe_run import ProbeResult, new_probe_session, refused_at_once, run_probe
from healthz.probe_spec import PROBE_KINDS, ProbeKind, ProbeSpec, is_loopback, parse_probe

__all__ = [
    "PROBE_KINDS",
    "STALE_AFTER_INTERVALS",
    "ExecOutcome",
    "ExecRunner",
    "ProbeKind",
    "ProbeLoop",
    "ProbeResult",
    "ProbeSpec",
    "SubprocessExecRunner",
    "is_loopback",
    "new_probe_session",
    "parse_probe",
    "refused_at_once",
    "run_probe",
]
