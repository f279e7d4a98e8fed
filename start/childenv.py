"""The environment a child is given: the pod's, the service's own, minus the secrets it is not
given (`ServiceSpec.withheld`, decided by start.catalogue.secrecy).

PID 1 itself keeps no secret in `os.environ` once the catalogue is read (`forget_secrets`), so
whatever it runs without an explicit environment (a library's helper, a future transient
child) inherits none; the engine keeps the values in the dict it hands to `spawn`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from start.catalogue.spec import ServiceSpec


def service_environment(spec: ServiceSpec, base_env: Mapping[str, str]) -> dict[str, str]:
    """What the service's process starts with: the pod's environment, its own on top, and no
    secret it does not name, whoever set it."""
    env = {**base_env, **dict(spec.environment)}
    for name in spec.withheld:
        env.pop(name, None)
    return env


def probe_environment(spec: ServiceSpec, base_env: Mapping[str, str]) -> dict[str, str]:
    """What the service's exec probes start with: the pod's environment, as before secrets
    existed, less the secrets the service is not given."""
    withheld = set(spec.withheld)
    return {name: value for name, value in base_env.items() if name not in withheld}


def forget_secrets(names: Iterable[str]) -> None:
    """Remove the pod's secrets from PID 1's own environment (not from the engine's copy)."""
    for name in names:
        os.environ.pop(name, None)
