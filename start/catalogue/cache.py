"""The last parsed catalogue, kept under $CODITECT_RUN so that a warm boot spawns at once.

A warm boot is a restart of the container inside the same pod: $CODITECT_RUN is an emptyDir,
which outlives its containers (not the pod). Parsing imports the `supervisor` library and
reads every file (~45 ms before the first fork); a cache hit needs neither. It is used only
when everything the parse depended on is as it was: the same catalogue location and overlay,
each file's stat taken before it was read, the files each `[include]` pattern matches, the
whole environment (as a digest, so the key holds no value), the host name, /etc/passwd and
/etc/group (`user=`), the code that reads a catalogue (every Python file of the packages in
CODE_PACKAGES, so a module added to them is covered without a list to keep, and the version
file of the `supervisor` library, which pip replaces with the rest of it), and every
executable and directory the checks found. Then the parse would give the same answer; the
engine still parses again once its children are spawned, and applies a difference the way a
reload does (`start.boot`).

The file holds no value of the environment: every text of the services in which one appears
(a `%(ENV_JWT_SECRET)s` expanded into a service's `environment=` or command) is stored with the
variable's name in its place, and filled in again from the environment on a hit, which the
key guarantees is the same one. A value that only the command's own word splitting cut into
pieces is not recognised (write such a value as one word).

The file is a pickle: only one that this uid wrote, in a directory only this uid can write
(`cache/`, 0700), is read, so another user of the pod cannot hand PID 1 code to run; it is
0600. Any doubt (missing, corrupt, foreign, another key) is a miss, and a miss is a normal
parse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib.util
import itertools
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from start.catalogue.spec import Catalogue, stamp_of

FORMAT = 3  # bump when what is stored changes shape
DIRECTORY = "cache"
FILENAME = "catalogue.pickle"
MAX_BYTES = 8 << 20  # a catalogue of a thousand services pickles to well under this
MAX_GLOB_MATCHES = 1001  # as many as the parser looks at (it refuses more than 1000)
# The packages whose code decides what a catalogue means (this one, the [health:x] grammar in
# healthz): a change to any of their Python files is a new key.
CODE_PACKAGES = ("start.catalogue", "healthz")
# The libraries it calls, each by the file that names its version: an upgrade replaces it with
# every other file of the library (one stat, where its ~25 modules took 0.5 ms on a warm boot).
LIBRARY_VERSIONS = (("supervisor", "version.txt"),)
SYSTEM_FILES = ("/etc/passwd", "/etc/group")
T = TypeVar("T")


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
            version, key, paths, sealed = payload
            if version != FORMAT or key != self._key() or not isinstance(sealed, Catalogue):
                return None
            if not files_unchanged(sealed) or not self._paths_hold(paths):
                return None
            catalogue: Catalogue = _each_text(sealed, _Sealed, lambda t: t.opened(self.environ))
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
        import pickle  # boot speed: a first boot (no cache yet) never needs it

        payload = pickle.loads(data)  # noqa: S301  # our own 0600 file, see the docstring
        return payload if isinstance(payload, tuple) and len(payload) == 4 else None

    def _paths_hold(self, paths: tuple[tuple[str, ...], tuple[str, ...]]) -> bool:
        executables, directories = paths
        return (all(os.path.isfile(p) and os.access(p, os.X_OK) for p in executables)
                and all(os.path.isdir(d) for d in directories))

    def _key(self) -> tuple[object, ...]:
        import hashlib  # boot speed: a first boot (no cache yet) never needs it

        environment = hashlib.sha256(repr(sorted(self.environ.items())).encode(
            "utf-8", "surrogateescape")).hexdigest()
        return (sys.version, code_stamps(), str(self.location.absolute()),
                None if self.overlay is None else str(self.overlay.absolute()),
                self.check_executables, environment, os.uname().nodename,
                tuple(stamp_of(path) for path in SYSTEM_FILES))

    # -- writing ------------------------------------------------------------------------------

    def store(self, catalogue: Catalogue) -> str | None:
        """Keep `catalogue` for the next boot; why it was not kept (None when it was).
        Written to a temporary file and renamed over the old one, so a reader sees either."""
        if catalogue.provenance is None:
            return "the catalogue does not say what it was read from"
        import pickle  # boot speed: stored after the boot, as in _read

        temporary = self.directory / f".{FILENAME}.{os.getpid()}"
        try:
            paths = self._paths_checked(catalogue)
            # The provenance is file names and stats, read on a hit before anything is opened.
            plain = dataclasses.replace(catalogue, provenance=None)
            sealed = dataclasses.replace(_each_text(plain, str, _Sealer(self.environ).seal),
                                         provenance=catalogue.provenance)
            data = pickle.dumps((FORMAT, self._key(), paths, sealed),
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
        # Boot speed: checks (difflib, shutil) is for a parse; a warm boot's `load` needs none.
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


def code_stamps() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Each Python file of CODE_PACKAGES and each library's version file, with its stat, found
    without importing them."""
    paths: list[str] = []
    for package in CODE_PACKAGES:
        for directory in _directories(package):
            with os.scandir(directory) as entries:
                paths.extend(sorted(e.path for e in entries if e.name.endswith(".py")))
    for library, version_file in LIBRARY_VERSIONS:
        paths.extend(os.path.join(d, version_file) for d in _directories(library))
    return tuple((path, stamp_of(path)) for path in paths)


def _directories(package: str) -> list[str]:
    spec = importlib.util.find_spec(package)
    return list(spec.submodule_search_locations or ()) if spec else []


@dataclasses.dataclass(frozen=True, slots=True)
class _Sealed:
    """A text of the catalogue as the file holds it: the literal pieces, with the name of the
    variable whose value stood between each two (`pieces` alternates text, name, text, …)."""

    pieces: tuple[str, ...]

    def opened(self, environ: Mapping[str, str]) -> str:
        return "".join(environ[p] if i % 2 else p for i, p in enumerate(self.pieces))


class _Sealer:
    """Finds the environment's values in a text, the longest first where two overlap."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.names = {value: name for name, value in sorted(environ.items()) if value}
        values = sorted(self.names, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def seal(self, text: str) -> str | _Sealed:
        if self.pattern is None:
            return text
        pieces: list[str] = []
        end = 0
        for match in self.pattern.finditer(text):
            pieces += [text[end:match.start()], self.names[match.group()]]
            end = match.end()
        return _Sealed((*pieces, text[end:])) if pieces else text


def _each_text(value: Any, kind: type[T], change: Callable[[T], object]) -> Any:
    """`value` with `change` applied to each `kind` (str when sealing, _Sealed when opening)
    inside its dataclasses and tuples; what holds none is returned as it is."""
    if isinstance(value, kind):
        return change(value)
    if isinstance(value, tuple):
        items = tuple(_each_text(item, kind, change) for item in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changed = {f.name: new for f in dataclasses.fields(value)
                   if (new := _each_text(old := getattr(value, f.name), kind, change)) is not old}
        return dataclasses.replace(value, **changed) if changed else value
    return value
