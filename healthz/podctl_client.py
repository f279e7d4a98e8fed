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

from healthz.podctl_errors import FAILED, UNREACHABLE, USAGE, PodctlError, PodUnreachable

TYPE_CHECKING = False  # spares the `typing` import at run time; mypy treats it as True
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from healthz.podctl_logs import Output

DEFAULT_RUN = "/run/coditect"
SOCKET_NAME = "podctl.sock"


def default_socket(env: Mapping[str, str]) -> str:
    """`$CODITECT_RUN/podctl.sock`, where the engine puts it (`/run/coditect` by default)."""
    return os.path.join(env.get("CODITECT_RUN") or DEFAULT_RUN, SOCKET_NAME)


MAX_ANSWER = 16 << 20  # bytes; a status of hundreds of services is a few hundred KiB
MAX_HEAD = 64 << 10  # an answer's status line and headers; ours are a few hundred bytes
MAX_REFUSAL = 64 << 10  # the JSON error of a refused stream


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
    sock.sendall(_request_line(method, path, body))
    chunks: list[bytes] = []
    size = 0
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER:
            raise MalformedAnswer(f"answer larger than {MAX_ANSWER} bytes")
    head, separator, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not separator:
        raise MalformedAnswer("not an HTTP response")
    return _status(head), body


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
            raise PodUnreachable(self._unreachable(exc)) from None
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

    def stream(self, path: str, out: Output, *, follow: bool) -> None:
        """GET `path` and copy its body to `out` as it comes (a log: `/v1/logs/NAME`), until the
        pod ends it; a refusal is the `PodctlError` `call` would raise. Following, a quiet
        stream is waited on without a deadline: only the connection and the answer's head are
        bounded by the timeout."""
        try:
            sock = connect(self.socket_path, self.timeout)
        except OSError as exc:
            raise PodUnreachable(self._unreachable(exc)) from None
        with sock:
            try:
                sock.sendall(_request_line("GET", path))
                status, rest = _read_head(sock)
                if status != 200:
                    while len(rest) < MAX_REFUSAL and (chunk := sock.recv(65536)):
                        rest += chunk
                    raise _refusal("GET", path, Response(status, rest)) or PodctlError(
                        FAILED, f"the pod answered {status} to GET {path}")
                if follow:
                    sock.settimeout(None)
                if rest:
                    out.write(rest)
                    out.flush()
                while chunk := sock.recv(65536):
                    out.write(chunk)
                    out.flush()
            except TimeoutError:
                raise PodctlError(
                    UNREACHABLE, f"pod unreachable: no answer within {self.timeout:g}s"
                ) from None
            except (ConnectionResetError, MalformedAnswer) as exc:
                raise PodctlError(
                    UNREACHABLE, f"pod unreachable: the connection broke ({exc or type(exc)})"
                ) from None

    def call(self, method: str, path: str, timeout: float | None = None,
             body: bytes = b"") -> Any:
        """A JSON route: its answer, or a `PodctlError` with the exit code the failure means."""
        answer = self.request(method, path, timeout, body)
        refused = _refusal(method, path, answer)
        if refused is not None:
            raise refused
        return answer.json()

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


def _refusal(method: str, path: str, answer: Response) -> PodctlError | None:
    """The error an answer means, with its exit code; None when it is a JSON answer to use."""
    data = answer.json()
    error = data.get("error") if isinstance(data, dict) else None
    if answer.status == 404 and isinstance(error, str) and error.startswith("no service"):
        return PodctlError(UNREACHABLE, error)
    if answer.status == 400 and isinstance(error, str):
        return PodctlError(USAGE, error)  # a bad name or signal the pod caught before us
    if answer.status == 404 and isinstance(error, str) and error.startswith("no log"):
        return PodctlError(FAILED, error)
    if answer.status in (404, 405):
        return PodctlError(FAILED, f"the pod does not know {method} {path} (an older engine?)")
    if answer.status >= 400 and isinstance(error, str):
        return PodctlError(FAILED, error)  # 503: shutting down, outcome unknown
    if answer.status >= 400 or data is None:
        detail = error if isinstance(error, str) else answer.text().strip()[:200]
        return PodctlError(FAILED, f"the pod answered {answer.status} to {method} {path}: {detail}")
    return None


def _request_line(method: str, path: str, body: bytes = b"") -> bytes:
    kind = "Content-Type: application/json\r\n" if body else ""
    return (f"{method} {path} HTTP/1.0\r\nHost: podctl\r\n"
            f"Accept: application/json\r\n{kind}Content-Length: {len(body)}\r\n\r\n"
            ).encode("ascii") + body


def _read_head(sock: socket.socket) -> tuple[int, bytes]:
    """Read up to the end of the answer's head: its status, and what came after the head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk or len(data) > MAX_HEAD:
            raise MalformedAnswer("not an HTTP response")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return _status(head), rest


def _status(head: bytes) -> int:
    status_line = head.split(b"\r\n", 1)[0].split()
    if (len(status_line) < 2 or not status_line[0].startswith(b"HTTP/")
            or not status_line[1].isdigit()):
        raise MalformedAnswer("not an HTTP response")
    return int(status_line[1])


def _owner_hint(path: str) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return " (run podctl as the user the pod runs as)"
    return f" (it belongs to uid {uid}: run podctl as that user)"
