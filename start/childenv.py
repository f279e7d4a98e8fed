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

# In the environment of a service that some secrets were withheld from: their names, so that
# `coditect-start --check` run from there (`podctl validate` in an IDE terminal) knows they are
# set in the pod, only not here (start.cli). Names, never values.
WITHHELD = "CODITECT_WITHHELD"


def service_environment(spec: ServiceSpec, base_env: Mapping[str, str]) -> dict[str, str]:
    """What the service's process starts with: the pod's environment, its own on top, and no
    secret it does not name, whoever set it."""
    env = {**base_env, **dict(spec.environment)}
    for name in (*spec.withheld, WITHHELD):
        env.pop(name, None)
    if spec.withheld:
        env[WITHHELD] = ",".join(spec.withheld)
    return env


def probe_environment(spec: ServiceSpec, base_env: Mapping[str, str]) -> dict[str, str]:
    """What the service's exec probes start with: the pod's environment, as before secrets
    existed, less the secrets the service is not given."""
    withheld = set(spec.withheld)
    return {name: value for name, value in base_env.items() if name not in withheld}


def withheld_here(environ: dict[str, str]) -> list[str]:
    """For `--check` in a service's environment: the secrets the pod withheld from it, set in
    `environ` to a stand-in so that `requires_env` and `%(ENV_X)s` check as they would in the
    pod; their names, for a note."""
    names = [n for n in environ.get(WITHHELD, "").split(",") if n and not environ.get(n)]
    environ.update(dict.fromkeys(names, "(withheld)"))
    return names


def forget_secrets(names: Iterable[str]) -> None:
    """Remove the pod's secrets from PID 1's own environment (not from the engine's copy)."""
    for name in names:
        os.environ.pop(name, None)
