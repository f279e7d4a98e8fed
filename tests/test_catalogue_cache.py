"""The catalogue cache: a hit only when nothing the parse depended on changed, a miss (a normal
parse) on any doubt, and never a way for a broken catalogue to start."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import pytest

from start.catalogue import Catalogue
from start.catalogue import load as load_catalogue
from start.catalogue.cache import CatalogueCache, code_stamps
from start.catalogue.spec import stamp_of
from tests.support import RunningPod, write_catalogue

ENVIRON = {"PATH": "/usr/bin:/bin", "HOME": "/root", "GREETING": "hello",
           "JWT_SECRET": "s3cr3t-never-on-disk"}


def catalogue_dir(tmp_path: Path) -> Path:
    return write_catalogue(tmp_path / "cat", {
        "web": {"command": "sleep %(ENV_GREETING)s", "startsecs": "0"},
        "worker": {"command": "/bin/sleep 1000", "directory": str(tmp_path)}})


def stored(tmp_path: Path, environ: dict[str, str] | None = None) -> tuple[CatalogueCache,
                                                                            Catalogue]:
    location = catalogue_dir(tmp_path)
    environ = environ or ENVIRON
    catalogue = load_catalogue(location, environ=environ)
    (tmp_path / "run").mkdir()  # the engine makes it before anything is stored
    cache = CatalogueCache(tmp_path / "run", location, None, environ)
    assert cache.store(catalogue) is None
    return cache, catalogue


def again(cache: CatalogueCache, **changes: object) -> CatalogueCache:
    """The cache as the next boot sees it (same files, maybe another environment)."""
    return CatalogueCache(cache.directory.parent, cache.location, cache.overlay,
                          changes.get("environ", cache.environ))  # type: ignore[arg-type]


def test_a_warm_boot_gets_back_exactly_what_was_parsed(tmp_path: Path) -> None:
    """Nothing changed: the cached catalogue equals a fresh parse, service by service."""
    cache, catalogue = stored(tmp_path)
    loaded = again(cache).load()
    assert loaded is not None and loaded.services == catalogue.services
    assert oct(cache.path.stat().st_mode & 0o777) == "0o600"
    assert oct(cache.directory.stat().st_mode & 0o777) == "0o700"


def test_an_edited_file_is_a_miss(tmp_path: Path) -> None:
    """A catalogue file rewritten (even to the same size) no longer matches."""
    cache, _ = stored(tmp_path)
    web = cache.location / "conf.d" / "web.conf"
    web.write_text(web.read_text().replace("startsecs=0", "startsecs=1"))
    assert again(cache).load() is None


def test_a_new_included_file_is_a_miss(tmp_path: Path) -> None:
    """A file the [include] pattern now matches changes what the parse would read."""
    cache, _ = stored(tmp_path)
    (cache.location / "conf.d" / "extra.conf").write_text("[program:extra]\ncommand=true\n")
    assert again(cache).load() is None


def test_a_changed_environment_value_is_a_miss(tmp_path: Path) -> None:
    """%(ENV_GREETING)s would expand differently: the environment is part of the key."""
    cache, _ = stored(tmp_path)
    assert again(cache, environ={**ENVIRON, "GREETING": "bye"}).load() is None
    assert again(cache, environ={**ENVIRON, "UNRELATED": "1"}).load() is None
    # The key holds a digest of the environment, not its values: a variable the catalogue
    # does not expand is nowhere in the file.
    assert b"s3cr3t" not in cache.path.read_bytes()


def test_a_vanished_executable_or_directory_is_a_miss(tmp_path: Path) -> None:
    """What the parse checked on disk is checked again: a removed directory= misses."""
    location = write_catalogue(tmp_path / "cat", {
        "worker": {"command": "/bin/sleep 1000", "directory": str(tmp_path / "work")}})
    (tmp_path / "work").mkdir()
    catalogue = load_catalogue(location, environ=ENVIRON)
    (tmp_path / "run").mkdir()
    cache = CatalogueCache(tmp_path / "run", location, None, ENVIRON)
    assert cache.store(catalogue) is None
    assert again(cache).load() is not None
    (tmp_path / "work").rmdir()
    assert again(cache).load() is None


@pytest.mark.parametrize("content", [b"", b"not a pickle", pickle.dumps(("a", "tuple")),
                                     pickle.dumps((1, (), ((), ()), "not a catalogue"))])
def test_a_corrupt_cache_file_is_a_miss(tmp_path: Path, content: bytes) -> None:
    """Truncated, garbage or of another shape: a miss, never an exception."""
    cache, _ = stored(tmp_path)
    cache.path.write_bytes(content)
    assert again(cache).load() is None


def test_a_cache_others_could_write_is_not_read(tmp_path: Path) -> None:
    """A group- or world-writable file (or directory) could have been planted: not read."""
    cache, _ = stored(tmp_path)
    cache.path.chmod(0o666)
    assert again(cache).load() is None
    cache.path.chmod(0o600)
    cache.directory.chmod(0o777)
    assert again(cache).load() is None
    cache.directory.chmod(0o700)
    assert again(cache).load() is not None


def test_an_unwritable_run_directory_is_reported_not_raised(tmp_path: Path) -> None:
    """$CODITECT_RUN that cannot hold the cache: store says why, load misses."""
    location = catalogue_dir(tmp_path)
    catalogue = load_catalogue(location, environ=ENVIRON)
    blocked = tmp_path / "run"
    blocked.write_text("a file where the directory should be")
    cache = CatalogueCache(blocked, location, None, ENVIRON)
    why = cache.store(catalogue)
    assert why is not None and "cannot write" in why
    assert cache.load() is None


def test_provenance_stamps_come_from_before_the_read(tmp_path: Path) -> None:
    """Each file read is stamped, with the pattern's matches, so an edit makes a new key."""
    location = catalogue_dir(tmp_path)
    catalogue = load_catalogue(location, environ=ENVIRON)
    assert catalogue.provenance is not None
    stamps = dict(catalogue.provenance.stamps)
    assert stamps[str(location / "supervisord.conf")] == stamp_of(
        str(location / "supervisord.conf"))
    [(pattern, matches)] = catalogue.provenance.globs
    assert pattern.endswith("conf.d/*.conf") and len(matches) == 2


# -- with the real engine -------------------------------------------------------------------


def test_second_boot_is_warm_and_spawns_the_same(tmp_path: Path) -> None:
    """The first boot keeps its catalogue; the second one starts from it and confirms it."""
    catalogue = write_catalogue(tmp_path / "cat", {"idle": {"command": "sleep 1000"}})
    for warm in (False, True):
        pod = RunningPod(catalogue, tmp_path / "home")
        try:
            pod.wait_event("booted", cached_catalogue=warm)
            pod.wait_event("ready", service="idle")
            pod.wait_event("watching_catalogue")
            assert not pod.events("catalogue_cache_stale")
        finally:
            pod.stop()
        assert pod.wait() == 0
    assert (pod.run_dir / "cache" / "catalogue.pickle").exists()


def test_invalid_catalogue_after_a_warm_one_still_exits_78_and_starts_nothing(
        tmp_path: Path) -> None:
    """A cache of the valid catalogue never lets the broken edit of it start anything."""
    marker = tmp_path / "started"
    catalogue = write_catalogue(tmp_path / "cat", {"idle": {"command": "sleep 1000"}})
    assert _boot_once(catalogue, tmp_path / "home").exists()
    write_catalogue(catalogue, {"idle": {"command": f"touch {marker}", "startsecss": "1"}})
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        assert pod.wait() == 78
        assert any("startsecss" in line for line in pod.stderr)
        assert not marker.exists()
    finally:
        pod.stop()


def _boot_once(catalogue: Path, home: Path) -> Path:
    """A cold boot that gets as far as writing the cache (it does so before it watches the
    catalogue), then a drain; the cache file's path."""
    pod = RunningPod(catalogue, home)
    try:
        pod.wait_event("watching_catalogue")
    finally:
        pod.stop()
    assert pod.wait() == 0
    return pod.run_dir / "cache" / "catalogue.pickle"


def _doctor(cache_file: Path, change: object) -> None:
    """Rewrite the cached catalogue behind the key's back (what no real boot can do)."""
    version, key, paths, catalogue = pickle.loads(cache_file.read_bytes())
    catalogue = change(catalogue)  # type: ignore[operator]
    cache_file.write_bytes(pickle.dumps((version, key, paths, catalogue)))


def test_a_cached_catalogue_the_parse_disagrees_with_is_replaced_like_a_reload(
        tmp_path: Path) -> None:
    """The parse after the spawns wins: the service comes back under the parsed spec."""
    catalogue = write_catalogue(tmp_path / "cat", {"idle": {"command": "sleep 1000"}})
    cache_file = _boot_once(catalogue, tmp_path / "home")
    _doctor(cache_file, lambda c: dataclasses.replace(c, services=tuple(
        dataclasses.replace(s, argv=("sleep", "999")) for s in c.services)))
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("booted", cached_catalogue=True)
        pod.wait_event("catalogue_cache_stale")
        pod.wait_event("reloaded", changed=["idle"])
        pod.wait_event("spawned", count=2, service="idle")
    finally:
        pod.stop()


def test_a_cached_catalogue_the_parse_rejects_stops_everything_and_exits_78(
        tmp_path: Path) -> None:
    """If the parse after a warm start finds the catalogue invalid, the pod drains, the cache
    is dropped, and the exit is 78 with every problem on stderr."""
    catalogue = write_catalogue(tmp_path / "cat", {"idle": {"command": "sleep 1000"}})
    cache_file = _boot_once(catalogue, tmp_path / "home")
    conf = catalogue / "conf.d" / "idle.conf"
    conf.write_text(conf.read_text() + "startsecss=1\n")

    def restamp(c: Catalogue) -> Catalogue:
        assert c.provenance is not None
        stamps = tuple((p, stamp_of(p)) for p, _ in c.provenance.stamps)
        return dataclasses.replace(c, provenance=dataclasses.replace(c.provenance,
                                                                     stamps=stamps))

    _doctor(cache_file, restamp)
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        assert pod.wait() == 78
        assert any("startsecss" in line for line in pod.stderr)
        assert pod.events("stopping", service="idle") or pod.events("exited", service="idle")
        assert not cache_file.exists()
    finally:
        pod.stop()
    assert os.path.exists(catalogue)


def test_an_invalid_edit_during_a_warm_boot_is_rejected_and_the_pod_runs_on(
        tmp_path: Path) -> None:
    """Files edited after the cache was read are an edit on disk like any other: an invalid
    one is rejected by a reload and the running catalogue kept (as on a cold boot), never a
    drain and exit 78 just because the container happened to restart warm."""
    gate = tmp_path / "gate"  # the service is ready once it exists: the boot waits for it
    catalogue = write_catalogue(tmp_path / "cat", {"idle": {"command": "sleep 1000"}},
                                health={"idle": {"ready": f"exec:test -e {gate}",
                                                 "interval": "100ms"}})
    gate.touch()
    assert _boot_once(catalogue, tmp_path / "home").exists()
    gate.unlink()
    pod = RunningPod(catalogue, tmp_path / "home")
    try:
        pod.wait_event("booted", cached_catalogue=True)
        conf = catalogue / "conf.d" / "idle.conf"
        conf.write_text(conf.read_text() + "startsecss=1\n")
        gate.touch()
        pod.wait_event("catalogue_changed_during_boot")
        rejected = pod.wait_event("reload_rejected")
        assert any("startsecss" in problem for problem in rejected[0]["problems"])
        assert pod.process.poll() is None
        assert not pod.events("catalogue_invalid")
    finally:
        pod.stop()
    assert pod.wait() == 0


def test_the_file_holds_no_value_of_the_environment(tmp_path: Path) -> None:
    """A secret expanded into a service's environment and command is stored as the variable's
    name and filled in again on a hit: the warm boot gets the same specs, the file no secret."""
    location = write_catalogue(tmp_path / "cat", {
        "api": {"command": "/bin/sleep 1000 --token=%(ENV_JWT_SECRET)s",
                "environment": 'JWT="%(ENV_JWT_SECRET)s",HOME_TOO="%(ENV_HOME)s/x"'}})
    catalogue = load_catalogue(location, environ=ENVIRON)
    spec = catalogue.services[0]
    assert dict(spec.environment)["JWT"] == ENVIRON["JWT_SECRET"]
    assert spec.argv[-1] == f"--token={ENVIRON['JWT_SECRET']}"
    (tmp_path / "run").mkdir()
    cache = CatalogueCache(tmp_path / "run", location, None, ENVIRON)
    assert cache.store(catalogue) is None
    data = cache.path.read_bytes()
    assert b"s3cr3t" not in data and b"JWT_SECRET" in data
    loaded = again(cache).load()
    assert loaded is not None and loaded.services == catalogue.services


def test_the_key_covers_every_module_that_reads_a_catalogue(tmp_path: Path) -> None:
    """Every Python file of the catalogue package and of healthz (names.py included) is in the
    key, found by listing the directories: a module added later needs no list kept; the
    supervisor library by its version file."""
    stamped = {path for path, _ in code_stamps()}
    root = Path(__file__).resolve().parent.parent
    for package in ("start/catalogue", "healthz"):
        for module in (root / package).glob("*.py"):
            assert str(module) in stamped or os.path.realpath(module) in stamped, module
    assert any(path.endswith(os.path.join("supervisor", "version.txt")) for path in stamped)
