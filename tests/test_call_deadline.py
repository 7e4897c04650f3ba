"""The data layer sees each call's gRPC deadline, and no deadline when the caller set none."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from server.call_deadline import remaining_seconds
from server.deadline_interceptor import DeadlineInterceptor


def _remaining(_request: bytes, _context: grpc.ServicerContext) -> bytes:
    return repr(remaining_seconds()).encode()


@pytest.fixture
def remaining_on_server() -> Iterator[grpc.UnaryUnaryMultiCallable]:
    """A call that answers what `remaining_seconds()` says on the server, behind DeadlineInterceptor."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[DeadlineInterceptor()])
    handler = grpc.unary_unary_rpc_method_handler(_remaining)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("probe.Deadline", {"M": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel.unary_unary("/probe.Deadline/M")
    server.stop(None)


def test_a_call_with_a_deadline_has_its_remaining_time(remaining_on_server: grpc.UnaryUnaryMultiCallable) -> None:
    remaining = float(remaining_on_server(b"", timeout=5))
    # Not `<= 5`: gRPC core may send a little more than the caller gave. It rounds grpc-timeout up (to 10 ms
    # between 1 s and 10 s) and measures it from a cached clock; a CI run saw 5.0085.
    assert 0 < remaining < 5.5


def test_a_call_without_a_deadline_has_none(remaining_on_server: grpc.UnaryUnaryMultiCallable) -> None:
    # grpcio says ~292 billion years; taken as a deadline, it made PostgreSQL set a statement timeout (a
    # round trip) on every call that had none.
    assert remaining_on_server(b"") == b"None"
