"""One gRPC call over raw HTTP/2 (the h2 library), for headers that grpcio's client will not send."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections import deque
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import h2.settings
from google.protobuf.message import Message


def raw_grpc_call(
    port: int, path: str, request: Message, headers: list[tuple[bytes, bytes]], *, ack_settings_first: bool
) -> dict[bytes, bytes]:
    """The response headers and trailers of one unary call to 127.0.0.1:`port` carrying `headers` as given.

    `ack_settings_first`: wait for the server's SETTINGS and acknowledge them before sending, as grpcio and
    grpc-go do; without it the request goes out at once, as a client in a hurry (or an attacker) may send it.
    """
    config = h2.config.H2Configuration(
        client_side=True,
        validate_outbound_headers=False,  # non-ASCII values are the point of some of these calls
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    connection = h2.connection.H2Connection(config)
    # Raw header bytes (no Huffman coding), so the server gets exactly what we say and encoding 1 MB is fast.
    encode = connection.encoder.encode
    connection.encoder.encode = lambda fields, huffman=True: encode(fields, huffman=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        if ack_settings_first:
            acked = False
            while not acked:
                events = connection.receive_data(sock.recv(65536))
                acked = any(isinstance(event, h2.events.SettingsAcknowledged) for event in events)
                sock.sendall(connection.data_to_send())
        # h2 would refuse to send more than the server's SETTINGS_MAX_HEADER_LIST_SIZE: sending it anyway
        # is what these calls test.
        connection.remote_settings._settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] = deque([1 << 30])
        stream_id = connection.get_next_available_stream_id()
        connection.send_headers(
            stream_id,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", path.encode()),
                (b":authority", f"127.0.0.1:{port}".encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                *headers,
            ],
        )
        body = request.SerializeToString()
        connection.send_data(stream_id, struct.pack(">BI", 0, len(body)) + body, end_stream=True)
        sock.sendall(connection.data_to_send())
        received: dict[bytes, bytes] = {}
        while True:
            data = sock.recv(65536)
            if not data:
                return received
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    received.update(dict(event.headers))
                if (
                    isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
                    and event.stream_id == stream_id
                ):
                    return received
            sock.sendall(connection.data_to_send())


@contextlib.contextmanager
def partial_messages(port: int, path: str, *, calls: int, declared_length: int) -> Iterator[int]:
    """Holds `calls` calls open on one connection, without a token, each having sent all but the last byte
    of a `declared_length`-byte request message, or as much of it as the server's flow control let in.

    Yields how many bytes went out, and closes the connection when done.
    """
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection(("127.0.0.1", port), timeout=_STALL_SECONDS) as sock:
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        sent = 0
        for _ in range(calls):
            stream_id = connection.get_next_available_stream_id()
            connection.send_headers(stream_id, _request_headers(port, path))
            unsent = struct.pack(">BI", 0, declared_length) + bytes(declared_length - 1)
            while unsent and _window(connection, stream_id, len(unsent), sock):
                chunk = unsent[: _window(connection, stream_id, len(unsent), sock)]
                connection.send_data(stream_id, chunk)
                sock.sendall(connection.data_to_send())
                sent += len(chunk)
                unsent = unsent[len(chunk) :]
        _round_trip(connection, sock)
        yield sent


_STALL_SECONDS = 0.5


def _round_trip(connection: h2.connection.H2Connection, sock: socket.socket) -> None:
    """Returns once the server has read everything sent so far: it answers a PING after the frames before it."""
    connection.ping(b"roundtrp")
    sock.sendall(connection.data_to_send())
    while True:
        data = sock.recv(65536)
        if not data:
            return
        if any(isinstance(event, h2.events.PingAckReceived) for event in connection.receive_data(data)):
            return


def _window(connection: h2.connection.H2Connection, stream_id: int, wanted: int, sock: socket.socket) -> int:
    """How much the server lets us send on `stream_id` now, waiting up to _STALL_SECONDS for it to grow;
    0 once it stays shut or the stream is gone."""
    while True:
        if stream_id not in connection.streams or connection.streams[stream_id].closed:
            return 0
        window = min(connection.local_flow_control_window(stream_id), connection.max_outbound_frame_size, wanted)
        if window > 0:
            return window
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return 0
        if not data:
            return 0
        connection.receive_data(data)
        sock.sendall(connection.data_to_send())


def _request_headers(port: int, path: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
