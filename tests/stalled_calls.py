"""Calls that send HEADERS and then nothing, as a slow or hostile client does, each on connections of their own."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

# A connection carries at most MAX_CONCURRENT_STREAMS (100) calls at once; past that grpc core refuses streams.
CALLS_PER_CONNECTION = 50


def own_connection(port: int) -> grpc.Channel:
    """A channel to 127.0.0.1:`port` on a connection of its own (channels with equal options share one)."""
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


@contextlib.contextmanager
def stalled_calls(port: int, count: int, *metadata: Any) -> Iterator[list[grpc.Future]]:
    """`count` GetTask calls that send HEADERS and then nothing (no message, no end of stream) for 10 s,
    with each `metadata` in turn (several callers' tokens, say)."""
    release = threading.Event()

    def never_sends() -> Iterator[bytes]:
        release.wait(10)
        yield from ()

    channels = [own_connection(port) for _ in range((count + CALLS_PER_CONNECTION - 1) // CALLS_PER_CONNECTION)]
    stalls = [channel.stream_unary("/todo.v1.TaskService/GetTask") for channel in channels]
    calls = [
        stalls[n % len(stalls)].future(never_sends(), metadata=metadata[n % len(metadata)], timeout=10)
        for n in range(count)
    ]
    try:
        time.sleep(0.5)  # until the server has taken every call
        yield calls
    finally:
        release.set()
        for call in calls:
            call.cancel()
        for channel in channels:
            channel.close()
