"""Property-based tests of the catalogue reader: whatever a catalogue file holds, the reader
either returns a catalogue or raises ConfigError with one-line problems; nothing else escapes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthz.spec import HealthSpec
from start.catalogue import load as load_catalogue
from start.catalogue.program import PROGRAM_KEYS
from start.errors import ConfigError

HEALTH_KEYS = ("ready", "live", "interval", "timeout", "failures", "start_timeout", "after",
               "critical", "requires_env", "restart_budget", "on_fatal", "exit_code",
               "oom_score_adj")
ENVIRON = {"PATH": "/usr/bin:/bin", "HOME": "/root", "X": "1"}
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# Values built from the characters that matter to the dialect: comments, quotes, expansions,
# separators, escapes, a non-ASCII letter, and words the converters know.
_fragments = st.sampled_from([
    " ;", " #", ";", "#", "'", '"', "\\", "%", "%%", "%(", ")s", "%(here)s", "%(ENV_X)s",
    "%(process_num)02d", "%(program_name)s", "%(ENV_NOPE)s", "%s", "=", ",", ":", "\n ",
    "\n", "[", "]", "true", "maybe", "0", "-1", "99999999999999999999", "TERM", "FOO", "sleep",
    "/bin/sh", "http://127.0.0.1:80/", "tcp://localhost:", "exec:", "ws://", "1s", "10/10m",
    "web", "a", "é", " ", "\t", "\r",
])
values = st.lists(_fragments, max_size=8).map("".join)
keys = st.one_of(st.sampled_from(sorted(PROGRAM_KEYS) + list(HEALTH_KEYS)),
                 st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10))
names = st.one_of(st.sampled_from(["web", "api", "a", "b", "web_00", ""]),
                  st.text("abc_%:/ .-é", max_size=6))
kinds = st.sampled_from(["program", "health", "group", "include", "supervisord", "DEFAULT",
                         "eventlistener", "unix_http_server", "programme"])


@st.composite
def catalogue_texts(draw: st.DrawFn) -> str:
    """A file of sections and key = value lines, plausible enough to reach the deep checks."""
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(kinds)
        colon = kind not in ("include", "supervisord", "DEFAULT", "unix_http_server")
        lines.append(f"[{kind}:{draw(names)}]" if colon else f"[{kind}]")
        if kind == "program" and draw(st.booleans()):
            lines.append("command = sleep 1")
        for _ in range(draw(st.integers(0, 5))):
            lines.append(f"{draw(keys)}{draw(st.sampled_from(['=', ' = ', ':']))}{draw(values)}")
    return "\n".join(lines) + "\n"


def load(directory: Path) -> None:
    try:
        load_catalogue(directory, environ=ENVIRON)
    except ConfigError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.strip(), "an empty problem line"
            assert "\n" not in problem and "\r" not in problem, "one line each"


@FAST
@given(text=st.text(max_size=400))
def test_any_text_is_a_catalogue_or_a_config_error(text: str) -> None:
    """Arbitrary text as supervisord.conf: a catalogue or ConfigError, nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "supervisord.conf").write_text(text, encoding="utf-8", errors="surrogatepass")
        load(Path(tmp))


@FAST
@given(data=st.binary(max_size=400))
def test_any_bytes_are_a_catalogue_or_a_config_error(data: bytes) -> None:
    """Arbitrary bytes as supervisord.conf: a catalogue or ConfigError, nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "supervisord.conf").write_bytes(data)
        load(Path(tmp))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(main=catalogue_texts(), included=catalogue_texts(), overlay=catalogue_texts())
def test_structured_catalogues_never_escape_config_error(main: str, included: str,
                                                         overlay: str) -> None:
    """Sections and keys the reader knows, with values full of the dialect's traps, spread over
    a main file, an included file and an overlay: a catalogue or ConfigError."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "conf.d").mkdir()
        (root / "supervisord.conf").write_text(
            "[include]\nfiles = conf.d/*.conf\n" + main, encoding="utf-8",
            errors="surrogatepass")
        (root / "conf.d" / "one.conf").write_text(included, encoding="utf-8",
                                                  errors="surrogatepass")
        (root / "overlay.conf").write_text(overlay, encoding="utf-8", errors="surrogatepass")
        try:
            catalogue = load_catalogue(root, overlay=root / "overlay.conf", environ=ENVIRON)
        except ConfigError as error:
            assert all(problem.strip() for problem in error.problems)
            return
        names = [service.name for service in catalogue.services]
        assert len(names) == len(set(names)), "service names are unique"
        for service in catalogue.services:
            assert set(service.after) <= set(names), "after holds only service names"


def _health_catalogue(key: str, value: str) -> tuple[list[str] | None, HealthSpec | None]:
    """[program:web] with `[health:web] key=value`: (problems, None) or (None, its health)."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "supervisord.conf").write_text(
            f"[program:web]\ncommand=sleep 1\n\n[health:web]\n{key}={value}\n",
            encoding="utf-8", errors="surrogatepass")
        try:
            catalogue = load_catalogue(Path(tmp), environ=ENVIRON)
        except ConfigError as error:
            for problem in error.problems:
                assert problem.startswith(tmp), f"a problem that names no file: {problem}"
            return error.problems, None
        service = catalogue.get("web")
        assert service is not None
        return None, service.health


_durations = st.one_of(
    st.text(max_size=30),
    st.lists(st.sampled_from(["1", "0", "2.5", ".5", "-", "ms", "s", "m", "h", " ", "x", "1e3",
                              "%", "%%", ";", " ;", "#", "\n"]), max_size=6).map("".join))


@FAST
@given(text=_durations)
def test_any_duration_in_the_catalogue(text: str) -> None:
    """`interval=<anything>`: a positive interval, or ConfigError naming file and key."""
    found, health = _health_catalogue("interval", text)
    if found is None:
        assert health is not None and health.interval > 0
    else:
        assert found


_urls = st.one_of(
    st.text(max_size=40),
    st.builds(lambda scheme, host, port, path: f"{scheme}{host}{port}{path}",
              st.sampled_from(["http://", "https://", "tcp://", "ws://", "wss://", "ftp://",
                               "exec:", "", "HTTP://"]),
              st.sampled_from(["127.0.0.1", "localhost", "[::1]", "[::1", "example.com", "",
                               "user:pw@host", "0.0.0.0", "ex ample", "é.com"]),
              st.sampled_from(["", ":80", ":0", ":65536", ":99999999999", ":x", ":-1", ":"]),
              st.sampled_from(["", "/", "/health?x=1", "/#frag", " ;c", "/%20", "/%(here)s"])))


@FAST
@given(text=_urls)
def test_any_probe_url_in_the_catalogue(text: str) -> None:
    """`ready=<anything>`: a parsed probe, or ConfigError naming file and key."""
    found, health = _health_catalogue("ready", text)
    if found is None:
        assert health is not None
        ready = health.ready
        assert ready.kind in ("http", "https", "tcp", "ws", "exec", "none")
        if ready.port is not None:
            assert 1 <= ready.port <= 65535
