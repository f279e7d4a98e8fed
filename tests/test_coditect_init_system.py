"""coditect_init against the operating system: SIGKILL mid-write, a full disk, read-only
filesystems, and a user without root. Mount tests run in a private mount namespace
(`unshare --mount`) so nothing leaks onto the host; user tests run a child as `nobody`."""

from __future__ import annotations

import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coditect_init import InitError, atomic, plan, prepare, seed

REPO = Path(__file__).resolve().parents[1]
DEMO_TEMPLATE = REPO / "demo" / "template"
DEADLINE = 20.0

is_root = os.geteuid() == 0
needs_root = pytest.mark.skipif(not is_root, reason="mounts and setpriv need root (CI is root)")
needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare(1)")
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv(1)")


def _nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


NOBODY = _nobody()
needs_nobody = pytest.mark.skipif(NOBODY is None, reason="no `nobody` user on this system")


@pytest.fixture
def tpl(tmp_path: Path) -> Path:
    copy = tmp_path / "template"
    shutil.copytree(DEMO_TEMPLATE, copy)
    return copy


def template_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def temp_entries(root: Path) -> list[Path]:
    return list(root.rglob(f"{atomic.TEMP_PREFIX}*"))


# --- SIGKILL during a write -----------------------------------------------------------------


def run_until_blocked(child: Callable[[Callable[[], None]], None]) -> None:
    """Fork; the child runs `child(blocked)` and calls blocked() at the moment of interest,
    which tells us and then waits forever. We SIGKILL it there and reap it."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(ready_r)

            def blocked() -> None:
                os.write(ready_w, b"x")
                os.read(hold_r, 1)  # nobody ever writes: block until killed

            child(blocked)
        finally:
            os._exit(3)
    os.close(ready_w)
    try:
        readable, _, _ = select.select([ready_r], [], [], DEADLINE)
        assert readable, "the child never reached the point to kill it at"
        assert os.read(ready_r, 1) == b"x", "the child ended before reaching that point"
    finally:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        for fd in (ready_r, hold_r, hold_w):
            os.close(fd)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def slow_chunks(data: bytes, blocked: Callable[[], None]) -> Iterator[bytes]:
    """Half the content, then stop: the file is exactly half-written when the kill lands."""
    yield data[: len(data) // 2]
    blocked()
    yield data[len(data) // 2:]


@pytest.mark.parametrize("existing", [None, b'{"old": true}\n'])
def test_kill_during_a_write_leaves_old_or_nothing(tmp_path: Path,
                                                   existing: bytes | None) -> None:
    """SIGKILL halfway through writing leaves the old file (or none), never a torn one."""
    target = tmp_path / "settings.json"
    if existing is not None:
        target.write_bytes(existing)
    new = b"x" * (4 << 20)

    def child(blocked: Callable[[], None]) -> None:
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        atomic.replace(fd, "settings.json", slow_chunks(new, blocked), mode=0o644)

    run_until_blocked(child)

    if existing is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == existing
    leftovers = temp_entries(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == len(new) // 2


def test_kill_during_seeding_then_next_boot_completes(tmp_path: Path, tpl: Path) -> None:
    """Killed mid-way through a first boot: every file present is whole, and the next boot
    adds the rest and removes the half-written temporary file."""
    home = tmp_path / "h"
    victim = "agents/refactorer.md"

    def child(blocked: Callable[[], None]) -> None:
        original = seed._content

        def content(step: plan.Step) -> Iterator[bytes]:
            if step.real != victim:
                return original(step)
            return slow_chunks(b"".join(original(step)), blocked)

        seed._content = content  # patched in this forked child only
        prepare(home, tpl)

    run_until_blocked(child)

    expected = template_files(tpl)
    for path in home.rglob("*"):
        rel = str(path.relative_to(home))
        if path.is_file() and rel in expected:
            assert path.read_bytes() == expected[rel], f"{rel} is torn"
    assert not (home / victim).exists()
    assert len(temp_entries(home)) == 1

    report = prepare(home, tpl)

    assert template_files(home).items() >= expected.items()
    assert temp_entries(home) == []
    assert any("interrupted" in w for w in report.warnings)
    assert {a.path: a.kind for a in report.actions}[victim] == "added"


def test_kill_during_settings_merge_keeps_the_users_file(tmp_path: Path, tpl: Path) -> None:
    """Killed while the merged settings.json is being written: the user's file is intact."""
    home = tmp_path / "h"
    prepare(home, tpl)
    mine = b'{"mine": 1}'
    (home / "settings.json").write_bytes(mine)

    def child(blocked: Callable[[], None]) -> None:
        original = seed._content

        def content(step: plan.Step) -> Iterator[bytes]:
            return slow_chunks(b"".join(original(step)), blocked)

        seed._content = content  # patched in this forked child only
        prepare(home, tpl)

    run_until_blocked(child)

    assert (home / "settings.json").read_bytes() == mine
    prepare(home, tpl)
    assert json.loads((home / "settings.json").read_text())["mine"] == 1


# --- private mount namespaces: full disk, read-only filesystems -----------------------------

# Runs inside `unshare --mount`: sets up the mounts, runs prepare, and prints what happened and
# what the tree looks like, because the mounts vanish with the namespace.
NAMESPACE_SCRIPT = textwrap.dedent("""
    import json, os, subprocess, sys
    from pathlib import Path
    from coditect_init import InitError, prepare, atomic
    spec = json.loads(sys.argv[1])
    for cmd in spec["setup"]:
        subprocess.run(cmd, check=True)
    out = {"runs": []}
    for run in spec["runs"]:
        if run.get("before"):
            exec(run["before"])
        try:
            report = prepare(Path(run["home"]), Path(spec["template"]))
            out["runs"].append({"code": 0, "text": str(report), "warnings": report.warnings})
        except InitError as err:
            out["runs"].append({"code": err.exit_code, "text": str(err)})
        except OSError as err:
            out["runs"].append({"code": -1, "text": repr(err)})
    out["tree"] = {}
    for dirpath, dirs, files in os.walk(spec["inspect"]):
        for name in files:
            path = Path(dirpath, name)
            out["tree"][str(path.relative_to(spec["inspect"]))] = path.read_bytes().hex()
    probe = spec.get("probe")
    if probe:
        try:
            Path(probe).write_text("x")
            out["probe"] = "writable"
        except OSError as err:
            out["probe"] = err.strerror
    print(json.dumps(out))
""")


def in_namespace(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
         NAMESPACE_SCRIPT, json.dumps(spec)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def tiny_tmpfs(where: Path, size: str = "64k") -> list[str]:
    return ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)]


def read_only_bind(where: Path) -> list[list[str]]:
    return [["mount", "--bind", str(where), str(where)],
            ["mount", "-o", "remount,bind,ro", str(where)]]


@needs_root
@needs_unshare
def test_full_disk_on_first_boot_writes_nothing(tmp_path: Path, tpl: Path) -> None:
    """A template that does not fit is refused (74) before anything, even the home, exists."""
    disk = tmp_path / "disk"
    disk.mkdir()
    out = in_namespace({"setup": [tiny_tmpfs(disk)], "template": str(tpl),
                        "runs": [{"home": str(disk / "home")}], "inspect": str(disk)})
    [run] = out["runs"]
    assert run["code"] == 74, run
    assert "space" in run["text"] and str(disk / "home") in run["text"]
    assert out["tree"] == {}


def fill_code(path: Path) -> str:
    """Code (run in the namespace) that writes to `path` until the filesystem is full."""
    return textwrap.dedent(f"""
        fd = os.open({str(path)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"f" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
    """)


@needs_root
@needs_unshare
def test_disk_full_midway_leaves_no_torn_or_temporary_file(tmp_path: Path) -> None:
    """When the disk fills during a write, the temporary file goes, no torn file is left,
    and prepare reports 74 naming the file."""
    disk = tmp_path / "disk"
    disk.mkdir()
    template = tmp_path / "t"
    (template / "agents").mkdir(parents=True)
    (template / "agents" / "big.md").write_bytes(b"b" * 40_000)
    # Filling the disk right after the space check makes the write itself hit ENOSPC.
    fill = "import coditect_init.checks as checks\n" + textwrap.dedent(f"""
        def space_then_fill(plan):
            {fill_code(disk / "filler").strip().replace(chr(10), chr(10) + " " * 12)}
        checks.space = space_then_fill
    """)
    home = disk / "home"
    out = in_namespace({"setup": [tiny_tmpfs(disk)], "template": str(template),
                        "runs": [{"home": str(home), "before": fill}], "inspect": str(disk)})
    [run] = out["runs"]
    assert run["code"] == 74, run
    assert "No space left" in run["text"]
    tree: dict[str, str] = out["tree"]
    assert not [name for name in tree if atomic.TEMP_PREFIX in name]
    assert "home/agents/big.md" not in tree


@needs_root
@needs_unshare
def test_complete_home_boots_on_a_full_disk(tmp_path: Path, tpl: Path) -> None:
    """Nothing to write means nothing to fail: a full volume still boots a complete home."""
    disk = tmp_path / "disk"
    disk.mkdir()
    home = disk / "home"
    before = (f"prepare(Path({str(home)!r}), Path(spec['template']))\n"
              + fill_code(disk / "filler"))
    out = in_namespace({"setup": [tiny_tmpfs(disk, "512k")], "template": str(tpl),
                        "runs": [{"home": str(home), "before": before}],
                        "inspect": str(disk)})
    [run] = out["runs"]
    assert run["code"] == 0, run
    assert "kept" in run["text"]


@needs_root
@needs_unshare
def test_settings_merge_on_a_full_disk_keeps_the_users_file(tmp_path: Path,
                                                            tpl: Path) -> None:
    """A merge the full volume cannot hold is refused (74) and the user's file is intact."""
    disk = tmp_path / "disk"
    disk.mkdir()
    home = disk / "home"
    before = (f"prepare(Path({str(home)!r}), Path(spec['template']))\n"
              f"Path({str(home / 'settings.json')!r}).write_text('{{\"mine\": 1}}')\n"
              + fill_code(disk / "filler"))
    out = in_namespace({"setup": [tiny_tmpfs(disk, "512k")], "template": str(tpl),
                        "runs": [{"home": str(home), "before": before}],
                        "inspect": str(disk)})
    [run] = out["runs"]
    assert run["code"] == 74, run
    assert "space" in run["text"]
    tree: dict[str, str] = out["tree"]
    assert bytes.fromhex(tree["home/settings.json"]) == b'{"mine": 1}'
    assert not [name for name in tree if atomic.TEMP_PREFIX in name]


@needs_root
@needs_unshare
def test_read_only_template(tmp_path: Path, tpl: Path) -> None:
    """A template on a read-only filesystem seeds normally: it is only ever read."""
    home = tmp_path / "h"
    out = in_namespace({"setup": read_only_bind(tpl), "template": str(tpl),
                        "runs": [{"home": str(home)}, {"home": str(home)}],
                        "inspect": str(home), "probe": str(tpl / "probe")})
    assert out["probe"] == "Read-only file system"
    first, second = out["runs"]
    assert first["code"] == 0 and second["code"] == 0, out["runs"]
    tree: dict[str, str] = out["tree"]
    for rel, content in template_files(tpl).items():
        assert bytes.fromhex(tree[rel]) == content


@needs_root
@needs_unshare
def test_read_only_home(tmp_path: Path, tpl: Path) -> None:
    """A complete home on a read-only filesystem boots (nothing to write); an incomplete one
    fails with 73, naming the read-only filesystem, before writing anything."""
    home = tmp_path / "h"
    prepare(home, tpl)
    out = in_namespace({"setup": read_only_bind(home), "template": str(tpl),
                        "runs": [{"home": str(home)}], "inspect": str(home)})
    assert out["runs"][0]["code"] == 0, out["runs"]

    (home / "agents" / "debugger.md").unlink()
    out = in_namespace({"setup": read_only_bind(home), "template": str(tpl),
                        "runs": [{"home": str(home)}], "inspect": str(home)})
    run = out["runs"][0]
    assert run["code"] == 73, run
    assert "read-only" in run["text"] and str(home / "agents") in run["text"]


# --- as a user without root -----------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory `nobody` can reach (pytest's tmp_path lives under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="coditect-init-test-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-m", "coditect_init", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)},
        cwd="/", capture_output=True, text=True, timeout=60)


def _nobody_ids() -> tuple[int, int]:
    assert NOBODY is not None
    return NOBODY.pw_uid, NOBODY.pw_gid


@needs_root
@needs_setpriv
@needs_nobody
def test_seeds_as_a_non_root_user(shared_dir: Path) -> None:
    """As `nobody`, in a home it owns, from a template it may only read: a normal seed."""
    template = shared_dir / "template"
    shutil.copytree(DEMO_TEMPLATE, template)
    for path in [template, *template.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444 | (path.stat().st_mode & 0o111))
    pv = shared_dir / "pv"
    pv.mkdir()
    os.chown(pv, *_nobody_ids())

    done = as_nobody("--home", str(pv / ".coditect"), "--template", str(template))

    assert done.returncode == 0, done.stderr
    home = pv / ".coditect"
    assert (home / "scripts" / "run-tests.sh").stat().st_mode & 0o100
    assert {p.stat().st_uid for p in [home, *home.rglob("*")]} == {_nobody_ids()[0]}
    again = as_nobody("--home", str(home), "--template", str(template))
    assert again.returncode == 0 and again.stdout.splitlines()[-1].endswith("kept")


@needs_root
@needs_setpriv
@needs_nobody
@pytest.mark.parametrize("exists", [True, False])
def test_home_unwritable(shared_dir: Path, exists: bool) -> None:
    """A home (or its parent) this user cannot write: 73, one line naming it, nothing made."""
    home = shared_dir / "home"
    if exists:
        home.mkdir()
        (home / "agents").mkdir()
    done = as_nobody("--home", str(home), "--template", str(DEMO_TEMPLATE))
    assert done.returncode == 73, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert str(shared_dir) in done.stderr and "not writable" in done.stderr
    assert sorted(p.name for p in (home.rglob("*") if exists else shared_dir.iterdir())) == (
        ["agents"] if exists else [])


@needs_root
@needs_setpriv
@needs_nobody
def test_template_unreadable(shared_dir: Path) -> None:
    """A template this user cannot read: 66, naming it, and no home is created."""
    template = shared_dir / "template"
    shutil.copytree(DEMO_TEMPLATE, template)
    (template / "agents").chmod(0o700)
    pv = shared_dir / "pv"
    pv.mkdir()
    os.chown(pv, *_nobody_ids())
    done = as_nobody("--home", str(pv / "home"), "--template", str(template))
    assert done.returncode == 66, done.stderr
    assert str(template / "agents") in done.stderr
    assert not (pv / "home").exists()


@needs_root
@needs_setpriv
@needs_nobody
def test_user_flag_needs_root(shared_dir: Path) -> None:
    """Without root, --user for someone else is a usage error (2), not a failure halfway."""
    done = as_nobody("--home", str(shared_dir / "h"), "--template", str(DEMO_TEMPLATE),
                     "--user", "root")
    assert done.returncode == 2, done.stderr
    assert "only root" in done.stderr


def test_prepare_errors_are_init_errors_not_os_errors(tmp_path: Path) -> None:
    """Even an odd failure (home under a file) surfaces as InitError with an exit code."""
    (tmp_path / "file").write_text("")
    with pytest.raises(InitError) as caught:
        prepare(tmp_path / "file" / "home", None)
    assert caught.value.exit_code in (65, 73, 74)
