"""HTTP over the pod's control socket: one HTTP/1.0 exchange on an AF_UNIX stream.

Why not `http.client`: importing it loads the `email` parser and `ssl`, about 16 ms, a third of
what `podctl status` costs in all, to talk to one peer we wrote ourselves (the engine's aiohttp
app) on a socket that never speaks TLS. The exchange here is the smallest HTTP there is: one
request line and three headers out; a status line, headers and a body read to EOF back
(HTTP/1.0, so the server closes when it is done and nothing is chunked).

Every call has a timeout, and every way of not reaching the pod becomes one line that says
which (no socket, refused, permission denied, no answer) with exit code 4.
"""

from __future__ import annotations

import json
import os
import socket

from healthz.podctl_errors import FAILED, UNREACHABLE, USAGE, PodctlError

TYPE_CHECKING = False  # spares the `typing` import at run time; mypy treats it as True
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULT_RUN = "/run/coditect"
SOCKET_NAME = "podctl.sock"


def default_socket(env: Mapping[str, str]) -> str:
    """`$CODITECT_RUN/podctl.sock`, where the engine puts it (`/run/coditect` by default)."""
    return os.path.join(env.get("CODITECT_RUN") or DEFAULT_RUN, SOCKET_NAME)


MAX_ANSWER = 16 << 20  # bytes; a status of hundreds of services is a few hundred KiB


class MalformedAnswer(Exception):
    """What came back is not an HTTP response."""


def connect(socket_path: str, timeout: float) -> socket.socket:
    """A connected stream to the pod, or OSError saying why not."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
    except BaseException:
        sock.close()
        raise
    return sock


def exchange(sock: socket.socket, method: str, path: str,
             body: bytes = b"") -> tuple[int, bytes]:
    """Send one request (`body`: JSON, for `run`), read the whole answer: (status, body).
    TimeoutError when no answer came in time, MalformedAnswer when it was not HTTP, OSError
    when the stream broke."""
    kind = "Content-Type: application/json\r\n" if body else ""
    request = (f"{method} {path} HTTP/1.0\r\nHost: podctl\r\n"
               f"Accept: application/json\r\n{kind}Content-Length: {len(body)}\r\n\r\n")
    sock.sendall(request.encode("ascii") + body)
    chunks: list[bytes] = []
    size = 0
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER:
            raise MalformedAnswer(f"answer larger than {MAX_ANSWER} bytes")
    head, separator, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if (not separator or len(status_line) < 2 or not status_line[0].startswith(b"HTTP/")
            or not status_line[1].isdigit()):
        raise MalformedAnswer("not an HTTP response")
    return int(status_line[1]), body


class Response:
    """Status and body of one answer, read completely before the connection closes."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (a proxy's or an old engine's page)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class PodClient:
    """The pod as seen through its control socket."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, timeout: float | None = None,
                body: bytes = b"") -> Response:
        limit = self.timeout if timeout is None else timeout
        try:
            sock = connect(self.socket_path, limit)
        except OSError as exc:
            raise PodctlError(UNREACHABLE, self._unreachable(exc)) from None
        try:
            with sock:
                status, answer = exchange(sock, method, path, body)
            return Response(status, answer)
        except TimeoutError:
            if method == "GET":
                raise PodctlError(
                    UNREACHABLE, f"pod unreachable: no answer within {limit:g}s"
                ) from None
            raise PodctlError(
                FAILED,
                f"no outcome within {limit:g}s; the order was sent and may still be "
                "carried out (see podctl status; --timeout waits longer)",
            ) from None
        except (OSError, MalformedAnswer) as exc:
            raise PodctlError(
                UNREACHABLE, f"pod unreachable: the connection broke ({exc or type(exc)})"
            ) from None

    def call(self, method: str, path: str, timeout: float | None = None,
             body: bytes = b"") -> Any:
        """A JSON route: its answer, or a `PodctlError` with the exit code the failure means."""
        answer = self.request(method, path, timeout, body)
        data = answer.json()
        error = data.get("error") if isinstance(data, dict) else None
        if answer.status == 404 and isinstance(error, str) and error.startswith("no service"):
            raise PodctlError(UNREACHABLE, error)
        if answer.status == 400 and isinstance(error, str):
            raise PodctlError(USAGE, error)  # a bad name or signal the pod caught before us
        if answer.status in (404, 405):
            raise PodctlError(FAILED, f"the pod does not know {method} {path} (an older engine?)")
        if answer.status >= 400 and isinstance(error, str):
            raise PodctlError(FAILED, error)  # 503: shutting down, outcome unknown
        if answer.status >= 400 or data is None:
            detail = error if isinstance(error, str) else answer.text().strip()[:200]
            raise PodctlError(
                FAILED, f"the pod answered {answer.status} to {method} {path}: {detail}"
            )
        return data

    def _unreachable(self, exc: OSError) -> str:
        where = self.socket_path
        if isinstance(exc, FileNotFoundError | NotADirectoryError):
            return (
                f"pod unreachable: no socket at {where} "
                "(is the pod running? --socket or CODITECT_RUN name another)"
            )
        if isinstance(exc, ConnectionRefusedError):
            return (
                f"pod unreachable: connection refused at {where} (stale socket: no pod behind it)"
            )
        if isinstance(exc, PermissionError):
            return f"pod unreachable: permission denied on {where}{_owner_hint(where)}"
        if isinstance(exc, TimeoutError | BlockingIOError):
            return f"pod unreachable: {where} accepts no connections (the pod is stuck or busy)"
        return f"pod unreachable: {where}: {exc.strerror or exc}"


def _owner_hint(path: str) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return " (run podctl as the user the pod runs as)"
    return f" (it belongs to uid {uid}: run podctl as that user)"
