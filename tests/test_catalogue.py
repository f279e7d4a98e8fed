"""The catalogue reader: what real supervisord configurations mean here (numprocs, groups,
expansions, includes, the overlay), and that no input, however broken, gets past our one-line
errors. The corpus of exact messages is tests/test_catalogue_corpus.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from start.catalogue import Catalogue
from start.catalogue import load as load_catalogue
from start.catalogue.files import MAX_FILE_BYTES
from start.errors import ConfigError
from tests.support import PYTHON, ROOT, write_catalogue

ENVIRON = {"PATH": "/usr/bin:/bin", "HOME": "/root", "CATALOGUE_TEST_VALUE": "hello"}
CORPUS = Path(__file__).resolve().parent / "catalogues"


def load(directory: Path, **kwargs: object) -> Catalogue:
    kwargs.setdefault("environ", ENVIRON)
    return load_catalogue(directory, **kwargs)  # type: ignore[arg-type]


def problems(directory: Path, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load(directory, **kwargs)
    return raised.value.problems


def main_file(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "supervisord.conf").write_text(text)
    return directory


def check(catalogue: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    """`python -m start --check` as a real process, optionally under `prefix` (setpriv)."""
    return subprocess.run([*prefix, PYTHON, "-m", "start", "--check", "--catalogue",
                           str(catalogue)], env={**ENVIRON, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def assert_one_line_errors(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 78, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert all(line.startswith("coditect-start: ") for line in done.stderr.splitlines())
    for needle in needles:
        assert needle in done.stderr, done.stderr


# -- real supervisord configurations ------------------------------------------------------------

def test_real_supervisord_conf_means_what_supervisord_means() -> None:
    """The corpus's full supervisord.conf: numprocs, group, quoting, %(here)s, %(ENV_X)s."""
    case = CORPUS / "valid-supervisord-conf"
    catalogue = load(case, environ={**ENVIRON, "CATALOGUE_TEST_SECONDS": "1000"})
    assert [s.name for s in catalogue.services] == [
        "worker", "mailer", "web_00", "web_01", "web_02"]
    web = catalogue.get("web_01")
    assert web is not None and web.program == "web"
    env = dict(web.environment)
    assert env["GREETING"] == "hello, world" and env["WHO"] == "hello" and env["PORT"] == "8001"
    assert web.directory == str(case)
    assert web.stopsignal == 3 and web.exitcodes == (0, 2) and web.logfile_maxbytes == 1 << 20
    assert web.health.ready.port == 8001  # [health:web] expanded per process
    worker = catalogue.get("worker")
    assert worker is not None
    assert dict(worker.environment)["QUEUE"] == "workers/worker"  # %(group_name)s is the group
    assert worker.directory == str(case / "conf.d")  # %(here)s is the included file's directory
    assert worker.after == ("web_00", "web_01", "web_02")  # a program's name: all its processes
    mailer = catalogue.get("mailer")
    assert mailer is not None and mailer.argv == ("sleep", "1000") and not mailer.autostart


def test_after_may_name_a_group(tmp_path: Path) -> None:
    """`after` naming a [group:x] waits for every process of the group's programs."""
    directory = main_file(tmp_path, "[group:back]\nprograms=db,cache\n"
                          "[program:db]\ncommand=sleep 1\n[program:cache]\ncommand=sleep 1\n"
                          "[program:web]\ncommand=sleep 1\n[health:web]\nafter=back\n")
    web = load(directory).get("web")
    assert web is not None and set(web.after) == {"db", "cache"}


def test_inline_comment_outside_quotes_is_a_comment(tmp_path: Path) -> None:
    """`value   ; comment` is what every supervisord.conf has: accepted, cut as supervisord does."""
    directory = main_file(tmp_path, "[program:web]\ncommand=sleep 100   ; the program\n"
                          "startsecs=5 # seconds\nenvironment=A=\"x;y\",B=1\n")
    web = load(directory).get("web")
    assert web is not None
    assert web.argv == ("sleep", "100") and web.startsecs == 5.0
    assert dict(web.environment) == {"A": "x;y", "B": "1"}


def test_without_supervisord_section_and_as_a_file(tmp_path: Path) -> None:
    """--catalogue may name the file itself; [supervisord] is not required here."""
    main_file(tmp_path, "[program:web]\ncommand=sleep 100\n")
    catalogue = load(tmp_path / "supervisord.conf")
    assert [s.name for s in catalogue.services] == ["web"]


def test_production_catalogue_with_demo_overlay_is_valid() -> None:
    """The pod's own catalogue and the demo overlay, as scripts/demo runs them."""
    environ = {**ENVIRON, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
               "JWT_SECRET": "x", "FDB_CLUSTER_FILE": str(ROOT / "demo" / "fdb.cluster"),
               "CODITECT_HOME": "/tmp/home", "CODITECT_RUN": "/tmp/run",
               "CODITECT_WORKSPACE": "/tmp"}
    catalogue = load_catalogue(ROOT / "supervisor", overlay=ROOT / "demo" / "overlay.conf",
                               environ=environ,
                               check_executables=shutil.which("nginx", path=environ["PATH"])
                               is not None)
    nginx = catalogue.get("nginx")
    assert nginx is not None and set(nginx.after) == {"theia", "coditect-v5-api", "codi2"}
    # Under memory pressure the developer's processes go first, the door last (PID 1 keeps
    # its own value, below all of them): docs/CATALOGUE.md, "Memory pressure".
    scores = {s.name: s.health.oom_score_adj for s in catalogue.services}
    assert scores == {"theia": 1000, "codi2": 600, "file-monitor": 600,
                      "coditect-v5-api": 300, "nginx": 200}


def test_overlay_problems_name_the_overlay(tmp_path: Path) -> None:
    """A bad key set by the overlay is reported at the overlay's line, not the catalogue's."""
    catalogue = write_catalogue(tmp_path / "cat", {"web": {"command": "sleep 100"}})
    overlay = tmp_path / "overlay.conf"
    overlay.write_text("[program:web]\nautostart=maybe\n\n[program:ghost]\ncommand=sleep 1\n")
    found = problems(catalogue, overlay=overlay)
    assert f"{overlay}:2: [program:web] autostart: not a valid boolean value: 'maybe'" in found
    # A section the catalogue lacks (a service removed since) is ignored with a note.
    assert not any("[program:ghost]" in p for p in found)


def test_every_problem_of_one_section_at_once(tmp_path: Path) -> None:
    """supervisor stops at a section's first bad value; we report each key."""
    directory = main_file(tmp_path, "[program:web]\ncommand=sleep 1\nautostart=maybe\n"
                          "stopsignal=FOO\nnumprocs=x\n")
    assert [p.split(": ", 2)[1] for p in problems(directory)] == [
        "[program:web] autostart", "[program:web] stopsignal", "[program:web] numprocs"]


# -- no input gets past our one-line errors -------------------------------------------------------

def test_huge_file_is_one_line(tmp_path: Path) -> None:
    """A catalogue file past the size limit is refused before it is parsed."""
    directory = main_file(tmp_path, "[supervisord]\n" + "; padding\n" * (MAX_FILE_BYTES // 8))
    assert_one_line_errors(check(directory), "is larger than")


def test_include_chain_and_loop(tmp_path: Path) -> None:
    """Includes do not nest (as in supervisord): a chain or a loop is reported, never followed."""
    directory = main_file(tmp_path, "[include]\nfiles = a.conf\n[program:m]\ncommand=sleep 1\n")
    (tmp_path / "a.conf").write_text("[include]\nfiles = supervisord.conf b.conf\n")
    (tmp_path / "b.conf").write_text("[program:b]\ncommand=sleep 1\n")
    found = problems(directory)
    assert found == [f"{tmp_path}/a.conf:1: [include] in an included file is ignored by "
                     "supervisord (it reads [include] in the main file only); list these files "
                     "there"]


def test_include_matching_the_main_file_reads_it_once(tmp_path: Path) -> None:
    """`files = *.conf` beside supervisord.conf is common; the main file is not read twice."""
    directory = main_file(tmp_path, "[include]\nfiles = *.conf\n[program:m]\ncommand=sleep 1\n")
    (tmp_path / "other.conf").write_text("[program:o]\ncommand=sleep 1\n")
    assert {s.name for s in load(directory).services} == {"m", "o"}


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "symlink-loop", "dangling"])
def test_include_of_what_is_not_a_file(tmp_path: Path, target: str) -> None:
    """A FIFO, a device, a symlink loop or a dangling link: one line each, no hang."""
    name = tmp_path / "conf.d" / "x.conf"
    name.parent.mkdir()
    if target == "fifo":
        os.mkfifo(name)
    elif target == "symlink-loop":
        os.symlink(name, name)
    elif target == "dangling":
        os.symlink(tmp_path / "nowhere", name)
    else:
        os.symlink(target, name)
    directory = main_file(tmp_path, "[include]\nfiles = conf.d/*.conf\n")
    done = check(directory)
    assert_one_line_errors(done, str(name))


def test_too_many_programs(tmp_path: Path) -> None:
    """A thousand and one programs is not a pod: one line, quickly."""
    text = "".join(f"[program:p{i}]\ncommand=sleep 1\n" for i in range(1001))
    found = problems(main_file(tmp_path, text))
    assert found[-1].endswith("more than 1000 services in one pod")


def test_long_after_chain_has_no_recursion_limit(tmp_path: Path) -> None:
    """A chain of 999 `after`s is checked for cycles without exhausting the stack."""
    text = "".join(f"[program:p{i}]\ncommand=sleep 1\n[health:p{i}]\nafter=p{i + 1}\n"
                   for i in range(999)) + "[program:p999]\ncommand=sleep 1\n"
    catalogue = load(main_file(tmp_path, text), check_executables=False)
    assert len(catalogue.services) == 1000


def test_catalogue_directory_that_cannot_be_listed(tmp_path: Path) -> None:
    """A path under a file (ENOTDIR) is one line, not an OSError."""
    (tmp_path / "file").write_text("")
    assert_one_line_errors(check(tmp_path / "file" / "x"), "Not a directory")


CAN_DROP_DAC = os.geteuid() == 0 and shutil.which("setpriv") is not None
# Root reads any file; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH it obeys the mode bits
# like anyone else, while still able to run the venv's interpreter under /root.
DROP_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search")


@pytest.mark.skipif(not CAN_DROP_DAC and os.geteuid() == 0,
                    reason="root without setpriv reads every file")
def test_permission_denied(tmp_path: Path) -> None:
    """Unreadable main file, included file and included directory: one line each."""
    directory = main_file(tmp_path / "cat", "[include]\nfiles = conf.d/*.conf locked/*.conf\n")
    (directory / "conf.d").mkdir()
    unreadable = directory / "conf.d" / "secret.conf"
    unreadable.write_text("[program:s]\ncommand=sleep 1\n")
    unreadable.chmod(0)
    prefix = DROP_DAC if os.geteuid() == 0 else ()
    done = check(directory, *prefix)
    assert_one_line_errors(done, f"{unreadable}: cannot read included file: Permission denied")
    (directory / "supervisord.conf").chmod(0)
    done = check(directory, *prefix)
    assert_one_line_errors(
        done, f"{directory}/supervisord.conf: cannot read catalogue file: Permission denied")


def test_windows_line_endings_and_a_bom_are_read(tmp_path: Path) -> None:
    """A file saved by a Windows editor (BOM, CRLF) means the same as the Unix one."""
    (tmp_path / "supervisord.conf").write_bytes(
        b"\xef\xbb\xbf[program:web]\r\ncommand=sleep 100 ; note\r\nstartsecs=3\r\n")
    web = load(tmp_path).get("web")
    assert web is not None and web.argv == ("sleep", "100") and web.startsecs == 3.0
