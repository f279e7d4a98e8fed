"""The catalogue: supervisord's dialect, read by the `supervisor` library, into frozen specs.

`[program:x]` sections are turned into `ProcessConfig` objects by supervisor's own
`ServerOptions.processes_from_section` (`program`), so every key keeps supervisord's meaning
and default. The files (main file, `[include]`, the overlay) are read and merged by `sources`,
line by line (`files`), so that every problem is collected with its file, line, section and key
instead of stopping at the first; `build` puts the services together and checks across them
last (`checks`). `spec` holds the frozen result; `cache` keeps it for a warm boot.
docs/CATALOGUE.md is the reference for what is accepted.

The `[health:x]` section's grammar (`healthz.spec`, `healthz.probe_spec`, `healthz.durations`,
`healthz.names`) lives with the health service, which must import without the engine; this
package uses it, never the other way round.

Importing this package imports only `spec`: the parser (and the `supervisor` library) is
imported by `load`, so that a warm boot, which starts from the cache, never pays for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from start.catalogue.spec import Catalogue, Provenance, ServiceSpec, TaskSpec

__all__ = ["Catalogue", "Provenance", "ServiceSpec", "TaskSpec", "load"]


def load(
    location: Path,
    *,
    overlay: Path | None = None,
    environ: Mapping[str, str] | None = None,
    check_executables: bool = True,
) -> Catalogue:
    """Read and check a catalogue; raise ConfigError listing every problem found."""
    # Boot speed: the parser and `supervisor` (~45 ms) only when a catalogue is really parsed.
    from start.catalogue.build import build

    return build(location, overlay=overlay, environ=environ,
                 check_executables=check_executables)
