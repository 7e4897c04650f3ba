"""`--max-workers` still bounds the calls running our code at once, now that every call has a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from server.rpc_threads import ElasticThreadPool
from server.running_calls import RunningCallsInterceptor

_LIMIT = 3


class _Probe:
    """Handlers that count how many of them run at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def slow(self, request: bytes, _context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.05)
        with self._lock:
            self.running -= 1
        return request

    @staticmethod
    def read_all(requests: Iterator[bytes], _context: grpc.ServicerContext) -> bytes:
        return b"".join(requests)


@pytest.fixture
def probe_server() -> Iterator[tuple[str, _Probe]]:
    probe = _Probe()
    server = grpc.server(ElasticThreadPool(max_threads=100), interceptors=[RunningCallsInterceptor(_LIMIT)])
    handlers = {
        "Slow": grpc.unary_unary_rpc_method_handler(probe.slow),
        "ReadAll": grpc.stream_unary_rpc_method_handler(probe.read_all),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("probe.Probe", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", probe
    server.stop(None)


def test_at_most_the_limit_of_calls_run_at_once_and_the_others_wait_their_turn(
    probe_server: tuple[str, _Probe],
) -> None:
    address, probe = probe_server
    with grpc.insecure_channel(address) as channel, futures.ThreadPoolExecutor(24) as clients:
        slow = channel.unary_unary("/probe.Probe/Slow")
        answers = list(clients.map(lambda n: slow(bytes([n]), timeout=10), range(24)))
    assert answers == [bytes([n]) for n in range(24)]
    assert probe.most_at_once == _LIMIT


def test_a_request_stream_waiting_for_messages_takes_no_turn(probe_server: tuple[str, _Probe]) -> None:
    address, _ = probe_server
    release = threading.Event()

    def stalled() -> Iterator[bytes]:
        release.wait(10)
        yield b"late"

    with grpc.insecure_channel(address) as channel:
        read_all = channel.stream_unary("/probe.Probe/ReadAll")
        waiting = [read_all.future(stalled(), timeout=10) for _ in range(2 * _LIMIT)]
        try:
            time.sleep(0.3)
            assert channel.unary_unary("/probe.Probe/Slow")(b"x", timeout=2) == b"x"
        finally:
            release.set()
        assert [call.result() for call in waiting] == [b"late"] * (2 * _LIMIT)
