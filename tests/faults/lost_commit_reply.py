"""A TCP proxy in front of PostgreSQL that can lose a COMMIT's reply: the database commits, and the connection
is cut before the server hears so, as when a network drops between a write's COMMIT and its answer."""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

from sqlalchemy.engine import make_url

from tests.faults.armed_proxy import ArmedProxy

# psycopg sends COMMIT as a simple query ('Q', its length, the text); the proxy looks for its text only.
_COMMIT = b"COMMIT\x00"
_CHUNK = 65536


class LostCommitReply(ArmedProxy):
    """Forwards 127.0.0.1:`port` to the database `url` names; after `arm()`, the next COMMIT goes through and
    its connection is cut as the reply comes back (`reply_lost` is set then). One COMMIT per `arm()`."""

    def __init__(self, url: str) -> None:
        target = make_url(url)
        super().__init__((target.host or "127.0.0.1", target.port or 5432))
        # The proxied URL: no TLS, so that the proxy can see the COMMIT go by.
        self.url = target.set(host="127.0.0.1", port=self.port, query={"sslmode": "disable"}).render_as_string(
            hide_password=False
        )

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        cut_at_reply = threading.Event()
        threading.Thread(target=self._to_database, args=(client, upstream, cut_at_reply), daemon=True).start()
        threading.Thread(target=self._to_client, args=(upstream, client, cut_at_reply), daemon=True).start()

    def _to_database(self, client: socket.socket, upstream: socket.socket, cut_at_reply: threading.Event) -> None:
        while data := _receive(client):
            if _COMMIT in data and self._disarm():
                cut_at_reply.set()  # before the COMMIT leaves: its reply cannot come back first
            with suppress(OSError):
                upstream.sendall(data)
        _close(client, upstream)

    def _to_client(self, upstream: socket.socket, client: socket.socket, cut_at_reply: threading.Event) -> None:
        while data := _receive(upstream):
            if cut_at_reply.is_set():
                self.reply_lost.set()  # before the cut: the server's answer to it can beat this thread here
                _close(client, upstream)
                return
            with suppress(OSError):
                client.sendall(data)
        _close(client, upstream)


def _receive(connection: socket.socket) -> bytes:
    try:
        return connection.recv(_CHUNK)
    except OSError:
        return b""


def _close(*connections: socket.socket) -> None:
    for connection in connections:
        with suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
        connection.close()
