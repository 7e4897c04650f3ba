"""gRPC's length-prefixed message framing, so a C load generator can send and count real protobuf calls."""

from __future__ import annotations

import struct

from google.protobuf.message import Message

_PREFIX = struct.Struct(">BI")  # compressed flag, message length (gRPC over HTTP/2, "Length-Prefixed-Message")


def frame(message: Message) -> bytes:
    """The HTTP/2 DATA payload of one uncompressed gRPC message."""
    body = message.SerializeToString()
    return _PREFIX.pack(0, len(body)) + body


def unframe(payload: bytes) -> bytes:
    """The serialized message inside one framed payload; raises ValueError if it is not exactly one."""
    if len(payload) < _PREFIX.size:
        raise ValueError(f"a gRPC frame needs {_PREFIX.size} prefix bytes, got {len(payload)}")
    compressed, length = _PREFIX.unpack_from(payload)
    if compressed or len(payload) != _PREFIX.size + length:
        raise ValueError(f"not one uncompressed gRPC message of {length} bytes: {len(payload)} bytes")
    return payload[_PREFIX.size :]
