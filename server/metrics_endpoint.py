"""The Prometheus `/metrics` endpoint over HTTP, holding at most a few connections, each for a bounded time.

prometheus_client's own server (start_http_server) gives every connection a thread and no timeout: one that
never finishes its request keeps both for good. 1,016 such connections, without any credentials, took every
file descriptor of a server run with the common limit of 1024, and it stopped accepting gRPC connections.
"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

# A Prometheus server scrapes one replica once at a time; the rest is room for a person's curl.
MAX_SCRAPES_IN_FLIGHT = 16
# Each read of the request and write of the answer; a scrape takes milliseconds.
READ_TIMEOUT_SECONDS = 10.0


class _Handler(WSGIRequestHandler):
    def setup(self) -> None:
        self.timeout = READ_TIMEOUT_SECONDS  # read here, not at import: tests shorten it
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Not a line on stderr for every scrape, as wsgiref would write."""


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, as prometheus_client's, for at most MAX_SCRAPES_IN_FLIGHT connections at once;
    past them a connection is closed at once."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_SCRAPES_IN_FLIGHT)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: nothing else will give the slot back
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serves `registry` at http://host:port/metrics from a daemon thread; returns the WSGI server."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type("MetricsServer", (_BoundedServer,), {"address_family": family})
    httpd = make_server(host, port, make_wsgi_app(registry), server_class, handler_class=_Handler)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd
