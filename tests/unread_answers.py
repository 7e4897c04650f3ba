"""Calls whose answers the client never reads: it grants no HTTP/2 flow-control window, so every response
message stays in the server's memory, as a hostile client can make it, until the call ends."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import h2.settings
from google.protobuf.message import Message


class UnreadAnswers:
    """One HTTP/2 connection to 127.0.0.1:`port` with a 1-byte window: response HEADERS and trailers arrive
    (they are not flow-controlled), response messages never do."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self._h2.local_settings.initial_window_size = 1
        self._h2.initiate_connection()
        self._h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1})
        self._sock.sendall(self._h2.data_to_send())

    def call(self, path: str, request: Message, token: str) -> str:
        """Sends one unary call and waits for the server's first answer to it: "answered" once its response
        headers came (its message is held back by the window), else the grpc-status of a trailers-only refusal.
        """
        stream_id = self._h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"), ("te", "trailers"), ("authorization", f"Bearer {token}"),
        ]  # fmt: skip
        self._h2.send_headers(stream_id, headers)
        body = request.SerializeToString()
        self._h2.send_data(stream_id, struct.pack(">BI", 0, len(body)) + body, end_stream=True)
        self._sock.sendall(self._h2.data_to_send())
        while True:
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            events = self._h2.receive_data(data)
            self._sock.sendall(self._h2.data_to_send())  # SETTINGS and PING acknowledgements, no window
            for event in events:
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                    fields = {bytes(k): bytes(v) for k, v in event.headers}
                    status = fields.get(b"grpc-status")
                    return "answered" if status is None else status.decode()


@contextlib.contextmanager
def unread_answers(port: int) -> Iterator[UnreadAnswers]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        yield UnreadAnswers(sock)
