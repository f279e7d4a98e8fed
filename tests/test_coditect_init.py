"""coditect_init on real directories: seeding, later boots, settings.json, symlinks, the CLI."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coditect_init import Action, InitError, Report, atomic, plan, prepare, settings, template

REPO = Path(__file__).resolve().parents[1]
DEMO_TEMPLATE = REPO / "demo" / "template"


@pytest.fixture
def tpl(tmp_path: Path) -> Path:
    """A private copy of the demo template, free to be changed by the test."""
    copy = tmp_path / "template"
    shutil.copytree(DEMO_TEMPLATE, copy, symlinks=True)
    return copy


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "pv" / ".coditect"


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes | str | None]]:
    """Every entry under root: (mode, mtime_ns, ctime_ns, content or link target)."""
    out: dict[str, tuple[int, int, int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            path = Path(dirpath, name) if name else Path(dirpath)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                body: bytes | str | None = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                body = path.read_bytes()
            else:
                body = None
            out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, st.st_ctime_ns,
                                                body)
    return out


def template_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def kinds(report: Report) -> dict[str, str]:
    return {a.path: a.kind for a in report.actions}


# --- first boot -----------------------------------------------------------------------------


def test_fresh_seed_copies_the_template_and_makes_the_layout(home: Path, tpl: Path) -> None:
    """A first boot copies every template file byte for byte and creates logs/events.log."""
    report = prepare(home, tpl)

    for rel, content in template_files(tpl).items():
        assert (home / rel).read_bytes() == content, rel
    for name in template.LAYOUT_DIRS:
        assert (home / name).is_dir()
    assert (home / "logs" / "events.log").read_bytes() == b""
    assert set(kinds(report).values()) == {"created"}
    assert kinds(report)["."] == "created"
    assert report.warnings == []
    assert not list(home.rglob(f"{atomic.TEMP_PREFIX}*"))


def test_demo_template_has_the_promised_shape() -> None:
    """The shipped template has five agents, three skills, three workflows, scripts, hooks."""
    assert len(list((DEMO_TEMPLATE / "agents").glob("*.md"))) == 5
    assert len(list((DEMO_TEMPLATE / "skills").glob("*/SKILL.md"))) == 3
    assert len(list((DEMO_TEMPLATE / "workflows").iterdir())) == 3
    assert len(list((DEMO_TEMPLATE / "scripts").glob("*.sh"))) >= 3
    doc = json.loads((DEMO_TEMPLATE / "settings.json").read_text())
    assert doc["autoApprove"] and doc["hooks"]


def test_scripts_keep_their_executable_bit_whatever_the_umask(home: Path, tpl: Path) -> None:
    """Modes come from the template, not from the umask of whoever boots the pod."""
    old = os.umask(0o077)
    try:
        prepare(home, tpl)
    finally:
        os.umask(old)
    for script in (home / "scripts").glob("*.sh"):
        assert stat.S_IMODE(script.stat().st_mode) == 0o755, script
    assert stat.S_IMODE((home / "agents" / "debugger.md").stat().st_mode) == 0o644


def test_read_only_template_files_become_editable_copies(home: Path, tpl: Path) -> None:
    """A 0444 file in the image is seeded 0644: the copy is the user's to edit."""
    (tpl / "agents" / "debugger.md").chmod(0o444)
    prepare(home, tpl)
    assert stat.S_IMODE((home / "agents" / "debugger.md").stat().st_mode) == 0o644


def test_without_a_template_only_the_layout_is_made(home: Path) -> None:
    """template=None gives the directories, an empty events.log and a `{}` settings.json."""
    prepare(home, None)
    assert sorted(p.name for p in home.iterdir()) == sorted(
        [*template.LAYOUT_DIRS, "settings.json"])
    assert json.loads((home / "settings.json").read_text()) == {}
    assert (home / "logs" / "events.log").stat().st_size == 0


def test_template_symlinks_are_skipped_with_a_warning(home: Path, tpl: Path,
                                                      tmp_path: Path) -> None:
    """A symlink in the template is not seeded, so it cannot make us copy from elsewhere."""
    secret = tmp_path / "secret"
    secret.write_text("not for the home")
    (tpl / "agents" / "leak.md").symlink_to(secret)
    report = prepare(home, tpl)
    assert not (home / "agents" / "leak.md").exists()
    assert any("leak.md" in w for w in report.warnings)


# --- later boots ----------------------------------------------------------------------------


def test_second_boot_writes_nothing(home: Path, tpl: Path) -> None:
    """With nothing missing, no entry's mtime or ctime changes and every file is 'kept'."""
    prepare(home, tpl)
    before = snapshot(home)
    report = prepare(home, tpl)
    assert snapshot(home) == before
    assert set(kinds(report).values()) == {"kept"}
    assert not report.changed


def test_second_boot_is_fast(home: Path, tpl: Path) -> None:
    """A boot with nothing to do stats the template's entries and reads two small files."""
    prepare(home, tpl)
    start = time.perf_counter()
    for _ in range(10):
        prepare(home, tpl)
    assert (time.perf_counter() - start) / 10 < 0.1  # about 1 ms on an idle machine


def test_user_edits_are_kept_and_deleted_files_come_back(home: Path, tpl: Path) -> None:
    """An edited agent is never overwritten; a deleted one is added again."""
    prepare(home, tpl)
    edited = home / "agents" / "debugger.md"
    edited.write_text("my own debugger\n")
    edited_mtime = edited.stat().st_mtime_ns
    (home / "agents" / "refactorer.md").unlink()

    report = prepare(home, tpl)

    assert edited.read_text() == "my own debugger\n"
    assert edited.stat().st_mtime_ns == edited_mtime
    assert (home / "agents" / "refactorer.md").read_bytes() == (
        tpl / "agents" / "refactorer.md").read_bytes()
    assert kinds(report)["agents/debugger.md"] == "kept"
    assert kinds(report)["agents/refactorer.md"] == "added"


def test_user_files_outside_the_template_are_left_alone(home: Path, tpl: Path) -> None:
    """Files the user added are not looked at, let alone removed."""
    prepare(home, tpl)
    mine = home / "agents" / "mine.md"
    mine.write_text("mine")
    prepare(home, tpl)
    assert mine.read_text() == "mine"


def test_template_gains_a_file_and_a_settings_key(home: Path, tpl: Path) -> None:
    """A newer image adds its new file and new keys; the user's values stay as they are."""
    prepare(home, tpl)
    user = json.loads((home / "settings.json").read_text())
    user["defaultAgent"] = "debugger"
    user["autoApprove"] = ["Read(**)"]
    user["mine"] = True
    (home / "settings.json").write_text(json.dumps(user))
    (tpl / "agents" / "security-auditor.md").write_text("audit\n")
    (tpl / "skills" / "profile").mkdir()
    (tpl / "skills" / "profile" / "SKILL.md").write_text("profile\n")
    newer = json.loads((tpl / "settings.json").read_text())
    newer["telemetry"] = {"enabled": False}
    newer["hooks"]["Stop"] = [{"command": "true"}]
    newer["defaultAgent"] = "code-reviewer"
    (tpl / "settings.json").write_text(json.dumps(newer))

    report = prepare(home, tpl)

    merged = json.loads((home / "settings.json").read_text())
    assert merged["telemetry"] == {"enabled": False}
    assert merged["hooks"]["Stop"] == [{"command": "true"}]
    assert merged["hooks"]["PreToolUse"] == newer["hooks"]["PreToolUse"]
    assert merged["defaultAgent"] == "debugger"
    assert merged["autoApprove"] == ["Read(**)"]
    assert merged["mine"] is True
    got = kinds(report)
    assert got["agents/security-auditor.md"] == "added"
    assert got["skills/profile/"] == "added"
    assert got["skills/profile/SKILL.md"] == "added"
    assert got["settings.json"] == "merged"
    detail = next(a.detail for a in report.actions if a.kind == "merged")
    assert "telemetry" in detail and "hooks.Stop" in detail
    assert (home / "agents" / "security-auditor.md").read_text() == "audit\n"


def test_merge_keeps_mode_and_owner_of_the_settings_file(home: Path, tpl: Path) -> None:
    """Rewriting settings.json keeps the mode the user gave it (e.g. 0600 for secrets)."""
    prepare(home, tpl)
    (home / "settings.json").write_text("{}")
    (home / "settings.json").chmod(0o600)
    prepare(home, tpl)
    assert stat.S_IMODE((home / "settings.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe\x00", b""])
def test_corrupt_settings_is_set_aside(home: Path, tpl: Path, content: bytes) -> None:
    """Unparseable settings.json moves aside intact; the template's takes its place."""
    prepare(home, tpl)
    (home / "settings.json").write_bytes(content)

    report = prepare(home, tpl)

    aside = list(home.glob("settings.json.invalid-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == content
    assert (home / "settings.json").read_bytes() == (tpl / "settings.json").read_bytes()
    assert kinds(report)[aside[0].name] == "set aside"
    assert any(aside[0].name in w for w in report.warnings)
    assert aside[0].name.removeprefix("settings.json.invalid-").endswith("Z")


def test_set_aside_never_overwrites_an_earlier_one(tmp_path: Path, tpl: Path) -> None:
    """Two corrupt files set aside in the same second get distinct names."""
    home = tmp_path / "h"
    prepare(home, tpl)
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    (home / "settings.json.invalid-20300102T030405Z").write_text("older")
    (home / "settings.json").write_text("{")
    looked = plan.make(home, template.load(tpl), None, now)
    assert "settings.json.invalid-20300102T030405Z-2" in {a.path for a in looked.actions}


def test_template_settings_that_is_not_json_is_a_data_error(home: Path, tpl: Path) -> None:
    """A broken image template stops the boot with 65 and writes nothing."""
    (tpl / "settings.json").write_text("{oops")
    with pytest.raises(InitError) as caught:
        prepare(home, tpl)
    assert caught.value.exit_code == 65
    assert "settings.json" in str(caught.value)
    assert not home.exists()


# --- the wrong kind of thing, symlinks ------------------------------------------------------


def test_file_where_a_directory_should_be(home: Path, tpl: Path) -> None:
    """A regular file named `agents` is an error (65), and nothing else is written either."""
    home.mkdir(parents=True)
    (home / "agents").write_text("oops")
    before = snapshot(home)
    with pytest.raises(InitError) as caught:
        prepare(home, tpl)
    assert caught.value.exit_code == 65
    assert str(home / "agents") in str(caught.value)
    assert "\n" not in str(caught.value)
    assert snapshot(home) == before


def test_directory_where_a_file_should_be(home: Path, tpl: Path) -> None:
    """A directory named like a template file is reported, not replaced."""
    prepare(home, tpl)
    (home / "agents" / "debugger.md").unlink()
    (home / "agents" / "debugger.md").mkdir()
    with pytest.raises(InitError) as caught:
        prepare(home, tpl)
    assert caught.value.exit_code == 65
    assert "debugger.md" in str(caught.value)


def test_home_that_is_a_file(tmp_path: Path, tpl: Path) -> None:
    """A home path naming a regular file is a data error."""
    (tmp_path / "h").write_text("")
    with pytest.raises(InitError) as caught:
        prepare(tmp_path / "h", tpl)
    assert caught.value.exit_code == 65


@pytest.mark.parametrize("where", ["agents", "settings.json", "logs/events.log",
                                   "agents/debugger.md", "skills/run-tests"])
def test_hostile_symlink_is_not_followed(tmp_path: Path, tpl: Path, where: str) -> None:
    """A symlink leading out of the home stops the boot (65); its target is untouched and
    nothing is written anywhere."""
    home = tmp_path / "h"
    prepare(home, tpl)
    outside = tmp_path / "outside"
    outside.mkdir()
    target_file = outside / "victim"
    target_file.write_text("precious")
    victim = home / where
    shutil.rmtree(victim) if victim.is_dir() else victim.unlink()
    (home / "workflows" / "update-docs.yaml").unlink()  # the boot would otherwise add it
    victim.symlink_to(outside if where in ("agents", "skills/run-tests") else target_file)
    before_home, before_outside = snapshot(home), snapshot(outside)

    with pytest.raises(InitError) as caught:
        prepare(home, tpl)

    assert caught.value.exit_code == 65
    assert str(home / where) in str(caught.value) and "outside" in str(caught.value)
    assert snapshot(home) == before_home
    assert snapshot(outside) == before_outside


def test_relative_symlink_climbing_out_is_hostile(tmp_path: Path, tpl: Path) -> None:
    """`../../x` is as much outside as an absolute path."""
    home = tmp_path / "h"
    prepare(home, tpl)
    (home / "settings.json").unlink()
    (home / "settings.json").symlink_to("../outside.json")
    with pytest.raises(InitError) as caught:
        prepare(home, tpl)
    assert caught.value.exit_code == 65
    assert not (tmp_path / "outside.json").exists()


def test_symlinks_inside_the_home_are_followed(tmp_path: Path, tpl: Path) -> None:
    """A user's symlink to somewhere inside the home is respected: written through, kept."""
    home = tmp_path / "h"
    prepare(home, tpl)
    (home / "my-agents").mkdir()
    shutil.rmtree(home / "agents")
    (home / "agents").symlink_to("my-agents")
    (home / "config").mkdir()
    (home / "config" / "settings.json").write_text('{"mine": 1}')
    (home / "settings.json").unlink()
    (home / "settings.json").symlink_to("config/settings.json")

    report = prepare(home, tpl)

    assert (home / "agents").is_symlink() and (home / "settings.json").is_symlink()
    assert (home / "my-agents" / "debugger.md").is_file()
    merged = json.loads((home / "config" / "settings.json").read_text())
    assert merged["mine"] == 1 and "hooks" in merged
    assert kinds(report)["agents/debugger.md"] == "added"


def test_dangling_symlink_inside_the_home_is_kept_with_a_warning(home: Path, tpl: Path) -> None:
    """We do not create a file at the far end of a user's dangling symlink."""
    prepare(home, tpl)
    (home / "agents" / "debugger.md").unlink()
    (home / "agents" / "debugger.md").symlink_to("nowhere.md")
    report = prepare(home, tpl)
    assert not (home / "agents" / "nowhere.md").exists()
    assert any("dangling" in w for w in report.warnings)


# --- other refusals -------------------------------------------------------------------------


def test_missing_template(home: Path, tmp_path: Path) -> None:
    """A missing template is 66 and names the path; the home is not created."""
    with pytest.raises(InitError) as caught:
        prepare(home, tmp_path / "nope")
    assert caught.value.exit_code == 66
    assert str(tmp_path / "nope") in str(caught.value)
    assert not home.exists()


def test_template_that_is_a_file(home: Path, tmp_path: Path) -> None:
    """A template path naming a file is 66."""
    (tmp_path / "t").write_text("")
    with pytest.raises(InitError) as caught:
        prepare(home, tmp_path / "t")
    assert caught.value.exit_code == 66


def test_home_inside_the_template_is_refused(tpl: Path) -> None:
    """Seeding a template into itself is a usage error."""
    with pytest.raises(InitError) as caught:
        prepare(tpl / "home", tpl)
    assert caught.value.exit_code == 2


def test_unknown_user(home: Path, tpl: Path) -> None:
    """--user naming nobody known is 67."""
    with pytest.raises(InitError) as caught:
        prepare(home, tpl, user="no-such-user-here")
    assert caught.value.exit_code == 67


def test_a_second_run_at_the_same_time_is_refused(home: Path, tpl: Path) -> None:
    """While one run holds the home's lock another fails fast with 75 instead of interleaving."""
    prepare(home, tpl)
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(InitError) as caught:
            prepare(home, tpl)
        assert caught.value.exit_code == 75
    finally:
        os.close(fd)


# --- ownership ------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_user_owns_what_was_created_and_nothing_else(home: Path, tpl: Path) -> None:
    """With --user, every created entry (the home too) belongs to that user; kept ones don't
    change hands."""
    home.mkdir(parents=True)
    (home / "agents").mkdir()
    (home / "agents" / "debugger.md").write_text("root's")
    prepare(home, tpl, user="nobody")
    assert (home / "agents" / "debugger.md").stat().st_uid == 0
    assert (home / "agents").stat().st_uid == 0
    for rel in ("skills", "skills/run-tests/SKILL.md", "logs/events.log", "settings.json",
                "agents/refactorer.md", "scripts/run-tests.sh"):
        assert (home / rel).stat().st_uid == 65534, rel

    fresh = home.parent / "fresh"
    prepare(fresh, tpl, user="65534")
    assert fresh.stat().st_uid == 65534


# --- dry run, report, CLI -------------------------------------------------------------------


def test_dry_run_writes_nothing_and_says_what_it_would_do(home: Path, tpl: Path) -> None:
    """A dry run on a missing home reports the same actions as the real run, creating none."""
    would = prepare(home, tpl, dry_run=True)
    assert not home.exists()
    did = prepare(home, tpl)
    assert would.actions == did.actions
    assert would.dry_run and "dry run" in str(would)

    (home / "settings.json").write_text("{")
    before = snapshot(home)
    would = prepare(home, tpl, dry_run=True)
    assert snapshot(home) == before
    assert "set aside" in {a.kind for a in would.actions}


def test_report_lines() -> None:
    """Kept files collapse into one count unless verbose; the last line sums up."""
    report = Report(Path("/h"), actions=[])
    assert report.lines() == ["/h: nothing to do"]
    report.actions.extend([
        Action("created", "agents/"), Action("kept", "a.md"),
        Action("kept", "b.md"), Action("merged", "settings.json", "added x")])
    assert str(report).splitlines() == [
        "created   agents/", "merged    settings.json — added x",
        "kept      2 files as they were", "/h: 1 created, 2 kept, 1 merged"]
    assert "kept      a.md" in report.lines(verbose=True)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CODITECT_HOME", None)
    env.pop("CODITECT_TEMPLATE", None)
    return subprocess.run([sys.executable, "-m", "coditect_init", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_prints_what_it_did(home: Path, tpl: Path) -> None:
    """The command prints one line per action and a summary, and exits 0."""
    done = run_cli("--home", str(home), "--template", str(tpl))
    assert done.returncode == 0, done.stderr
    assert "created   agents/debugger.md" in done.stdout
    again = run_cli("--home", str(home), "--template", str(tpl))
    assert again.returncode == 0
    assert again.stdout.splitlines()[-1].endswith("kept")


@pytest.mark.parametrize(("args", "code"), [
    ((), 2),
    (("--home", "H", "--bogus"), 2),
    (("--home", "H", "--template", "/no/such/template"), 66),
    (("--home", "H", "--template", "T", "--user", "no-such-user-here"), 67),
])
def test_cli_exit_codes(home: Path, tpl: Path, args: tuple[str, ...], code: int) -> None:
    """User mistakes give their documented exit code and one line, never a traceback."""
    real = [str(home) if a == "H" else str(tpl) if a == "T" else a for a in args]
    done = run_cli(*real)
    assert done.returncode == code
    assert "Traceback" not in done.stderr
    if code != 2:
        assert len(done.stderr.strip().splitlines()) == 1
        assert done.stderr.startswith("coditect_init: error: ")


def test_cli_dry_run(home: Path, tpl: Path) -> None:
    """--dry-run exits 0, prints the plan, and creates nothing."""
    done = run_cli("--home", str(home), "--template", str(tpl), "--dry-run")
    assert done.returncode == 0
    assert "dry run" in done.stdout
    assert not home.exists()


# --- pieces ---------------------------------------------------------------------------------


def test_merge_adds_only_missing_keys_recursively() -> None:
    """Nested objects merge; arrays and conflicting types are the user's values."""
    user = {"a": 1, "nested": {"x": 1}, "list": [1], "typed": "user"}
    tmpl = {"a": 2, "nested": {"x": 2, "y": 3}, "list": [1, 2], "typed": {"k": 1}, "new": {}}
    merged = settings.merge(user, tmpl)
    assert merged.settings == {"a": 1, "nested": {"x": 1, "y": 3}, "list": [1],
                               "typed": "user", "new": {}}
    assert merged.added == ("nested.y", "new")
    assert user == {"a": 1, "nested": {"x": 1}, "list": [1], "typed": "user"}


def test_write_new_never_replaces_an_existing_file(tmp_path: Path) -> None:
    """If a file appears before the rename, it wins and no temporary file is left."""
    (tmp_path / "f").write_text("user")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert not atomic.write_new(fd, "f", [b"template"], mode=0o644)
        assert atomic.make_dir(fd, "d", mode=0o755)
        (tmp_path / "d" / "x").write_text("")
        assert not atomic.make_dir(fd, "d", mode=0o755)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_text() == "user"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"]
