"""Small HTTP helpers for the harness: one request, status only, loopback."""

from __future__ import annotations

import http.client
import urllib.parse


def http_status(url: str, timeout: float = 1.0, unix_socket: str | None = None) -> int | None:
    """The status code of GET `url`, or None when nothing answered in time."""
    parts = urllib.parse.urlsplit(url)
    connection: http.client.HTTPConnection
    if unix_socket is not None:
        connection = UnixHTTPConnection(unix_socket, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1",
                                                parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def answers(url: str, timeout: float = 1.0) -> bool:
    """GET `url` answers 200."""
    return http_status(url, timeout) == 200


def http_request(method: str, path: str, unix_socket: str,
                 timeout: float = 10.0) -> tuple[int, bytes]:
    """One request over a unix socket (the control socket); (status, body)."""
    connection = UnixHTTPConnection(unix_socket, timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock
