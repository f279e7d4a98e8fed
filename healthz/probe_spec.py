"""What a probe is, parsed once from the catalogue's text: ``http://…``, ``https://…``,
``tcp://host:port``, ``ws://…``, ``exec:COMMAND`` or ``none``; for readiness also ``notify``
(systemd's sd_notify protocol) and ``fd:N`` (s6's notification fd), which the service itself
reports and nothing polls (`start.notify`, `start.readyfd`).

Parsing is pure and cheap (no aiohttp): the engine checks the whole catalogue before it spawns
anything. Running a probe lives in :mod:`healthz.probe_run`.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit

ProbeKind = Literal["http", "https", "tcp", "ws", "exec", "none", "notify", "fd"]
PROBE_KINDS: tuple[ProbeKind, ...] = get_args(ProbeKind)
WEB_KINDS: tuple[ProbeKind, ...] = ("http", "https", "ws")  # fetched with aiohttp (a URL)
# Told by the service, not asked by a probe loop: readiness only.
SELF_REPORTED: tuple[ProbeKind, ...] = ("notify", "fd")
MAX_READY_FD = 1023  # below select()'s FD_SETSIZE, which some children still use

_URL_KINDS: dict[str, ProbeKind] = {"http": "http", "https": "https", "tcp": "tcp", "ws": "ws"}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80}
_FORMS = "http://…, https://…, tcp://host:port, ws://…, exec:COMMAND, notify, fd:N or none"
# A host name as DNS allows it; IP literals are checked by `ipaddress`.
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
# A command longer than this is refused before `shlex` sees it: shlex's time grows with the
# square of a word's length (1 MiB took it 12 s), and no real command line is this long.
MAX_COMMAND_CHARS = 64 << 10


def command_too_long(command: str) -> str | None:
    """Why `command` is refused before it is split (None when it is not): too long."""
    if len(command) <= MAX_COMMAND_CHARS:
        return None
    return (f"is {len(command)} characters long, more than {MAX_COMMAND_CHARS}; put a long "
            "command in a script and run that")


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One parsed probe. `path` carries the query too; `argv` is set for ``exec`` only,
    `fd` for ``fd:N`` only."""

    kind: ProbeKind
    text: str
    host: str | None = None
    port: int | None = None
    path: str = ""
    argv: tuple[str, ...] = ()
    fd: int | None = None

    @classmethod
    def none(cls) -> ProbeSpec:
        """The absent probe: the process being up is all there is to know."""
        return cls(kind="none", text="none")

    @property
    def url(self) -> str | None:
        """The URL to fetch for ``http``/``https``/``ws``; None for the other kinds."""
        if self.kind not in WEB_KINDS or self.host is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{host}:{self.port}{self.path or '/'}"

    @property
    def loopback_port(self) -> int | None:
        """The port this probe expects the service to listen on, when it probes this pod."""
        if self.host is None or self.port is None or not is_loopback(self.host):
            return None
        return self.port

    def __str__(self) -> str:
        return self.text


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8, ``::1`` and the wildcard addresses (which reach us)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def parse_probe(text: str) -> ProbeSpec:
    """Parse the catalogue's probe text; ValueError saying what is wrong and what is allowed."""
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"empty probe; expected {_FORMS}")
    if stripped.lower() == "none":
        return ProbeSpec.none()
    if stripped[:5].lower() == "exec:":
        return _parse_exec(stripped)
    if stripped.lower() == "notify":
        return ProbeSpec(kind="notify", text="notify")
    if stripped[:3].lower() == "fd:":
        return _parse_fd(stripped)
    scheme, sep, _ = stripped.partition("://")
    if not sep:
        raise ValueError(f"{stripped!r} is not a probe; expected {_FORMS}")
    scheme = scheme.lower()
    if scheme == "wss":
        raise ValueError(f"{stripped!r}: wss:// is not supported; probe the service with ws://")
    kind = _URL_KINDS.get(scheme)
    if kind is None:
        raise ValueError(f"{stripped!r}: unknown probe scheme {scheme!r}; expected {_FORMS}")
    return _parse_url(stripped, kind)


def _parse_exec(text: str) -> ProbeSpec:
    command = text[5:].strip()
    if not command:
        raise ValueError(f"{text!r}: exec: needs a command, e.g. exec:pg_isready -q")
    if (too_long := command_too_long(command)) is not None:
        raise ValueError(f"the exec: command {too_long}")
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:  # shlex says "No closing quotation" / "No escaped character"
        raise ValueError(f"{text!r}: cannot split the command: {exc}") from None
    if not argv or not argv[0]:
        raise ValueError(f"{text!r}: exec: needs a command, e.g. exec:pg_isready -q")
    return ProbeSpec(kind="exec", text=text, argv=argv)


def _parse_fd(text: str) -> ProbeSpec:
    number = text[3:].strip()
    if not number.isdecimal() or not number.isascii() or not 3 <= int(number) <= MAX_READY_FD:
        raise ValueError(f"{text!r}: fd:N needs a descriptor number from 3 to {MAX_READY_FD} "
                         "(0-2 are the child's stdin, stdout and stderr), e.g. fd:3")
    return ProbeSpec(kind="fd", text=f"fd:{int(number)}", fd=int(number))


def _parse_url(text: str, kind: ProbeKind) -> ProbeSpec:
    if any(ch.isspace() for ch in text):
        raise ValueError(f"{text!r}: a probe URL cannot contain spaces")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r}: {_port_problem(text, exc)}") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r}: credentials in a probe URL are not supported")
    host = parts.hostname
    if not host:
        raise ValueError(f"{text!r}: missing host, e.g. {kind}://127.0.0.1:8080")
    if not _valid_host(host):
        raise ValueError(f"{text!r}: {host!r} is not a host name or IP address")
    if port is None:
        if kind == "tcp":
            raise ValueError(f"{text!r}: missing port, e.g. tcp://127.0.0.1:5432")
        port = _DEFAULT_PORTS[kind]
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is out of range (1-65535)")
    path = parts.path
    if parts.query:
        path = f"{path or '/'}?{parts.query}"
    if kind == "tcp" and (path not in ("", "/") or parts.fragment):
        raise ValueError(f"{text!r}: a tcp probe takes only host and port")
    return ProbeSpec(kind=kind, text=text, host=host, port=port, path=path)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ":" not in host and _HOSTNAME.fullmatch(host) is not None
    return True


def _port_problem(text: str, exc: ValueError) -> str:
    if "out of range" in str(exc):
        port = re.search(r":(\d+)(?:[/?#]|$)", text.partition("://")[2])
        shown = f"port {port.group(1)}" if port else "the port"
        return f"{shown} is out of range (1-65535)"
    if "IPv6" in str(exc) or "[" in text:
        return f"bad IPv6 address ({exc})"
    return "the port must be a number from 1 to 65535"
