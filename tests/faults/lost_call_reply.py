"""A TCP proxy in front of a todo-server that can lose a call's reply: the server does the call and answers,
and the connection is cut before the client hears so, as when a replica dies or a network drops right then."""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

from tests.faults.armed_proxy import ArmedProxy

_FRAME_HEADER_BYTES = 9  # HTTP/2: length (3), type (1), flags (1), stream id (4)
_HEADERS = 0x1


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class LostCallReply(ArmedProxy):
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`server_port`; after `arm()`, the next response headers a call
    gets from the server are dropped and both connections cut (`reply_lost` is set then). One per `arm()`."""

    def __init__(self, server_port: int) -> None:
        super().__init__(("127.0.0.1", server_port))

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        threading.Thread(target=self._to_server, args=(client, server), daemon=True).start()
        threading.Thread(target=self._to_client, args=(server, client), daemon=True).start()

    @staticmethod
    def _to_server(client: socket.socket, server: socket.socket) -> None:
        with suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
        with suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _to_client(self, server: socket.socket, client: socket.socket) -> None:
        # Frame by frame, so that the connection's own frames (SETTINGS, PING, WINDOW_UPDATE) go through.
        try:
            while True:
                header = _read_exactly(server, _FRAME_HEADER_BYTES)
                payload = _read_exactly(server, int.from_bytes(header[:3], "big"))
                stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
                if header[3] == _HEADERS and stream != 0 and self._disarm():
                    self.reply_lost.set()
                    break
                client.sendall(header + payload)
        except (OSError, ConnectionError):
            pass
        for sock in (client, server):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
