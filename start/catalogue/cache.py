"""The last parsed catalogue, kept under $CODITECT_RUN so that a warm boot spawns at once.

A warm boot is a restart of the container inside the same pod: $CODITECT_RUN is an emptyDir,
which outlives its containers (not the pod). Parsing imports the `supervisor` library and
reads every file (~45 ms before the first fork); a cache hit needs neither. It is used only
when everything the parse depended on is as it was: the same catalogue location and overlay,
each file's stat taken before it was read, the files each `[include]` pattern matches, the
whole environment (as a digest, so the key holds no value), the host name, /etc/passwd and
/etc/group (`user=`), the parser's own code, and every executable and directory the checks
found. Then the parse would give the same answer; the engine still parses again once its
children are spawned, and applies a difference the way a reload does (`start.boot`).

The file is a pickle: only one that this uid wrote, in a directory only this uid can write
(`cache/`, 0700), is read, so another user of the pod cannot hand PID 1 code to run. Being the
parsed catalogue, it holds what the catalogue expands into the services' `environment=`
(a `%(ENV_JWT_SECRET)s` there is written in clear): the file is 0600, like the process
environment it copies, and lives in the pod's emptyDir. Any
doubt (missing, corrupt, foreign, another key) is a miss, and a miss is a normal parse.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from start.catalogue.spec import Catalogue, stamp_of

FORMAT = 1  # bump when what is stored changes shape
DIRECTORY = "cache"
FILENAME = "catalogue.pickle"
MAX_BYTES = 8 << 20  # a catalogue of a thousand services pickles to well under this
MAX_GLOB_MATCHES = 1001  # as many as the parser looks at (it refuses more than 1000)
# The modules whose code decides what a catalogue means: a new version is a new key.
CODE = {"start": ("catalogue.py", "catalogue_build.py", "catalogue_checks.py",
                  "catalogue_files.py", "catalogue_program.py", "catalogue_sources.py"),
        "healthz": ("spec.py", "probe_spec.py", "durations.py", "model.py"),
        "supervisor": ("options.py", "datatypes.py")}
SYSTEM_FILES = ("/etc/passwd", "/etc/group")


class CatalogueCache:
    """The cache for one catalogue (location, overlay) read under one environment."""

    def __init__(self, run_dir: Path, location: Path, overlay: Path | None,
                 environ: Mapping[str, str], *, check_executables: bool = True) -> None:
        self.directory = run_dir / DIRECTORY
        self.path = self.directory / FILENAME
        self.location = location
        self.overlay = overlay
        self.environ = environ
        self.check_executables = check_executables

    # -- reading ------------------------------------------------------------------------------

    def load(self) -> Catalogue | None:
        """The cached catalogue when its key matches exactly; None otherwise (never raises)."""
        try:
            payload = self._read()
            if payload is None:
                return None
            version, key, paths, catalogue = payload
            if version != FORMAT or key != self._key() or not isinstance(catalogue, Catalogue):
                return None
            if not files_unchanged(catalogue) or not self._paths_hold(paths):
                return None
            return catalogue
        except Exception:  # a cache is an optimisation: whatever is wrong with it is a miss
            return None

    def _read(self) -> tuple[Any, ...] | None:
        if not _private(os.lstat(self.directory), directory=True):
            return None
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not _private(info, directory=False) or info.st_size > MAX_BYTES:
                return None
            data = b""
            while len(data) <= info.st_size and (chunk := os.read(fd, 1 << 20)):
                data += chunk
        finally:
            os.close(fd)
        import pickle  # here, as hashlib below: a first boot (no cache yet) never needs it

        payload = pickle.loads(data)  # noqa: S301  # our own 0600 file, see the docstring
        return payload if isinstance(payload, tuple) and len(payload) == 4 else None

    def _paths_hold(self, paths: tuple[tuple[str, ...], tuple[str, ...]]) -> bool:
        executables, directories = paths
        return (all(os.path.isfile(p) and os.access(p, os.X_OK) for p in executables)
                and all(os.path.isdir(d) for d in directories))

    def _key(self) -> tuple[object, ...]:
        import hashlib  # here, not at the top: a cache that is never read costs nothing

        environment = hashlib.sha256(repr(sorted(self.environ.items())).encode(
            "utf-8", "surrogateescape")).hexdigest()
        return (sys.version, _code_stamps(), str(self.location.absolute()),
                None if self.overlay is None else str(self.overlay.absolute()),
                self.check_executables, environment, os.uname().nodename,
                tuple(stamp_of(path) for path in SYSTEM_FILES))

    # -- writing ------------------------------------------------------------------------------

    def store(self, catalogue: Catalogue) -> str | None:
        """Keep `catalogue` for the next boot; why it was not kept (None when it was).
        Written to a temporary file and renamed over the old one, so a reader sees either."""
        if catalogue.provenance is None:
            return "the catalogue does not say what it was read from"
        import pickle

        temporary = self.directory / f".{FILENAME}.{os.getpid()}"
        try:
            paths = self._paths_checked(catalogue)
            data = pickle.dumps((FORMAT, self._key(), paths, catalogue),
                                protocol=pickle.HIGHEST_PROTOCOL)
            self.directory.mkdir(mode=0o700, exist_ok=True)
            if not _private(os.lstat(self.directory), directory=True):
                return f"{self.directory} is not a directory only uid {os.geteuid()} can write"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                with os.fdopen(fd, "wb", closefd=False) as stream:
                    stream.write(data)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            return f"cannot write {error.filename or self.path}: {error.strerror or error}"
        return None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _paths_checked(self, catalogue: Catalogue) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The executables and directories the parse found, to be found again on a hit."""
        if not self.check_executables:
            return (), ()
        from start.catalogue.checks import resolve

        default_path = self.environ.get("PATH", "")
        executables: list[str] = []
        directories: list[str] = []
        for spec in catalogue.services:
            path = dict(spec.environment).get("PATH", default_path)
            found = resolve(spec.argv[0], path, spec.directory)
            if found is not None:
                executables.append(found)
            if spec.directory:
                directories.append(spec.directory)
            for probe in (spec.health.ready, spec.health.live):
                if probe.kind == "exec" and (found := resolve(probe.argv[0], default_path)):
                    executables.append(found)
        return tuple(dict.fromkeys(executables)), tuple(dict.fromkeys(directories))


def _private(info: os.stat_result, *, directory: bool) -> bool:
    """Ours, of the right kind, and writable by nobody else."""
    kind = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    return kind and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def files_unchanged(catalogue: Catalogue) -> bool:
    """Whether every file the parse read, and what each `[include]` matched, is as it was."""
    provenance = catalogue.provenance
    if provenance is None:
        return False
    return (all(stamp and stamp_of(path) == stamp for path, stamp in provenance.stamps)
            and all(_matches(pattern) == matches for pattern, matches in provenance.globs))


def _matches(pattern: str) -> tuple[str, ...]:
    """What the parser's `[include]` would match now, found the same way."""
    return tuple(sorted(itertools.islice(glob.iglob(pattern), MAX_GLOB_MATCHES)))


def _code_stamps() -> tuple[object, ...]:
    import importlib.util

    stamps: list[object] = []
    for package, files in CODE.items():
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or ()) if spec else []
        for name in files:
            path = os.path.join(locations[0], name) if locations else name
            stamps.append((path, stamp_of(path)))
    return tuple(stamps)
