"""Which services bind a wildcard address on their command line, where the catalogue does not
say they are a door (`[health:NAME] public=true`): a warning of `--check` and `podctl doctor`.

nginx is the pod's one door; everything else listens on loopback (docs/SECURITY.md, Network
exposure). A service told `--host 0.0.0.0` is reachable from every pod of the cluster past
nginx, unless a NetworkPolicy happens to cover its port. Only the command line is read: a bind
in a service's own configuration file is not seen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from start.catalogue.spec import ServiceSpec

# A word that is a wildcard address: alone (`--host 0.0.0.0`, `-l ::`), as a flag's value
# (`--hostname=0.0.0.0`), with a port (`0.0.0.0:8080`, `[::]:80`) or a scheme (`http://0.0.0.0`).
_WILDCARD = re.compile(r"(?:[-\w.]*=)?(?:[a-z][a-z0-9+.-]*://)?(?:0\.0\.0\.0|::|\[::\])"
                       r"(?::\d+)?/?")
_QUOTES = "'\"`;,()"


def wildcard_binds(argv: Iterable[str]) -> list[str]:
    """Each wildcard bind in a command, as written (`--host 0.0.0.0`). Words inside an argument
    (`sh -c '… --host 0.0.0.0'`) count too."""
    words = [word.strip(_QUOTES) for argument in argv for word in argument.split()]
    found = []
    for index, word in enumerate(words):
        if _WILDCARD.fullmatch(word):
            flag = words[index - 1] if index and words[index - 1].startswith("-") else ""
            found.append(f"{flag} {word}".strip())
    return found


def exposure_warnings(services: Iterable[ServiceSpec]) -> list[str]:
    """One line per program that binds a wildcard address without `public=true`."""
    warned: dict[str, str] = {}
    for service in services:
        binds = wildcard_binds(service.argv)
        if binds and not service.health.public and service.program not in warned:
            warned[service.program] = (
                f"[program:{service.program}] command binds a wildcard address "
                f"({', '.join(binds)}): every pod of the cluster can reach it, not only through "
                "nginx; bind 127.0.0.1, or if it is meant to be a door set public=true in "
                f"[health:{service.program}]")
    return list(warned.values())
