"""The environment marks that tell whose a process in the pod is.

The engine puts them in the environment of what it starts (`start.process`, `start.execprobe`);
the faces read them back from /proc to attribute memory and CPU (`healthz.census`). Both sides
import the names from here so that they cannot drift apart. Imports nothing: the engine needs
it before its first spawn.
"""

from __future__ import annotations

# `<service>/<run>`: inherited by every process a run of a service starts (start.strays).
RUN_MARK = "CODITECT_SERVICE_RUN"
# Set on the engine's own helpers (an `exec:` probe's command): the pod's, no service's.
HELPER_MARK = "CODITECT_POD_HELPER"


def service_of(mark: str) -> str:
    """The service a run mark names ("theia/3.123" → "theia")."""
    return mark.partition("/")[0]
