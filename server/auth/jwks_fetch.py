"""One GET of a JWKS URL, all of it within one deadline, no redirect followed.

urllib's `timeout` bounds each socket operation, not the fetch: an endpoint that sends a byte every few
seconds would hold the one refresh thread forever. Here every read gets only the time left. And urllib
follows a redirect to any host and scheme (https to http, ftp): keys must come from the URL configured.
A URL on this machine is fetched directly: through a proxy from the environment, plain http to it would
cross the network, and the proxy would choose the keys. Other URLs honour http_proxy and https_proxy.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from server.config import is_loopback_url

MAX_JWKS_BYTES = 1 << 20


class JwksError(Exception):
    """The JWKS could not be fetched or parsed; the message names the URL and the cause, never key material."""


def fetch_url(url: str, timeout: float) -> bytes:
    """The body of an http(s) GET of `url`, at most MAX_JWKS_BYTES, fetched within `timeout` seconds.

    A redirect is an error that names where it pointed. The deadline covers the status line, the headers
    and the body; the TCP connect and the TLS handshake each get the time left when the connection opens
    (so a late handshake overruns it by the connect's time at worst); name resolution is bounded by the
    system resolver alone.
    """
    if not url.startswith(("http://", "https://")):
        raise JwksError(f"JWKS URL {url!r} is not http(s)")
    deadline = time.monotonic() + timeout
    # An empty ProxyHandler replaces the default one, which reads the proxy environment variables.
    direct = [urllib.request.ProxyHandler({})] if is_loopback_url(url) else []
    opener = urllib.request.build_opener(
        _HTTPHandlerWithDeadline(deadline), _HTTPSHandlerWithDeadline(deadline), _RedirectsRefused, *direct
    )
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (scheme checked)
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_JWKS_BYTES + 1)
    except urllib.error.HTTPError as error:
        error.close()
        raise _refused(url, error) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise _too_late(url, timeout) from None
        raise
    except TimeoutError:
        raise _too_late(url, timeout) from None
    if len(body) > MAX_JWKS_BYTES:
        raise JwksError(f"JWKS at {url} is over {MAX_JWKS_BYTES} bytes")
    return body


def _refused(url: str, error: urllib.error.HTTPError) -> JwksError:
    if not 300 <= error.code < 400:
        return JwksError(f"JWKS at {url} answered HTTP {error.code}")
    location = (error.headers.get("Location") or "")[:200]
    return JwksError(
        f"JWKS at {url} answered HTTP {error.code} redirecting to {location!r}, which is not followed: "
        "set JWT_JWKS_URL to the URL that serves the keys"
    )


def _too_late(url: str, timeout: float) -> JwksError:
    return JwksError(f"JWKS at {url} was not fetched within {timeout:g}s")


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the JWKS fetch deadline has passed")
    return left


class _SocketReaderWithDeadline(io.RawIOBase):
    """Reads a socket, each read allowed only the time left until `deadline` (time.monotonic())."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        # Through a socket file, like http.client: it keeps the socket open after the connection lets go of it.
        self._file = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(_time_left(self._deadline))
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()
        super().close()


class _ResponseWithDeadline(http.client.HTTPResponse):
    """An HTTPResponse whose status line, headers and body must all arrive by `deadline`."""

    def __init__(self, sock: socket.socket, *, deadline: float, **options: Any) -> None:
        super().__init__(sock, **options)
        self.fp.close()
        self.fp = io.BufferedReader(_SocketReaderWithDeadline(sock, deadline))


def _connections_with_deadline(
    connection_class: type[http.client.HTTPConnection], deadline: float
) -> Callable[..., http.client.HTTPConnection]:
    """What urllib calls to open a connection: one that connects in the time left and answers by `deadline`."""

    def open_connection(host: str, **options: Any) -> http.client.HTTPConnection:
        connection = connection_class(host, **{**options, "timeout": _time_left(deadline)})
        connection.response_class = functools.partial(_ResponseWithDeadline, deadline=deadline)
        return connection

    return open_connection


class _HTTPHandlerWithDeadline(urllib.request.HTTPHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connections_with_deadline(http.client.HTTPConnection, self._deadline), req)


class _HTTPSHandlerWithDeadline(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connections_with_deadline(http.client.HTTPSConnection, self._deadline), req)


class _RedirectsRefused(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status, which fetch_url explains
