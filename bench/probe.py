"""Small HTTP helpers for the harness: one request, status only, loopback."""

from __future__ import annotations

import http.client
import urllib.parse

from healthz.podctl_client import connect, exchange


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status code of GET `url`, or None when nothing answered in time."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                            timeout=timeout)
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
    """One request over the control socket, with podctl's own client; (status, body)."""
    with connect(unix_socket, timeout) as sock:
        return exchange(sock, method, path)
