"""The data layer sees each call's gRPC deadline, and no deadline when the caller set none."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TypeVar

import grpc
import pytest

from server import call_deadline
from server.call_deadline import remaining_seconds
from server.db.commit_watch import CommitWatch
from server.db.connections import CallExpired, ShuttingDown, refuse_if_expired
from server.deadline_interceptor import DeadlineInterceptor
from server.errors import Unavailable

T = TypeVar("T")


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


@pytest.fixture
def draining(monkeypatch: pytest.MonkeyPatch) -> None:
    """begin_drain is process-wide and never undone: undone here after the test."""
    monkeypatch.setattr(call_deadline, "_drain_ends_at", None)


def _in_a_call(seconds_remaining: float | None, work: Callable[[], T]) -> T:
    def run() -> T:
        if seconds_remaining is not None:
            call_deadline.set_call_deadline(seconds_remaining)
        return work()

    return contextvars.Context().run(run)


@pytest.mark.usefixtures("draining")
def test_the_drain_bounds_every_call_and_says_when_it_is_what_ran_out() -> None:
    call_deadline.begin_drain(10)
    remaining = _in_a_call(None, call_deadline.remaining_seconds)
    assert remaining is not None
    assert 9 < remaining <= 10
    assert _in_a_call(None, call_deadline.draining_first)
    assert _in_a_call(60, call_deadline.draining_first)
    assert not _in_a_call(1, call_deadline.draining_first)
    remaining = _in_a_call(1, call_deadline.remaining_seconds)
    assert remaining is not None
    assert 0 < remaining <= 1


@pytest.mark.usefixtures("draining")
def test_past_the_drain_a_call_is_refused_as_unavailable_and_past_its_deadline_as_deadline_exceeded() -> None:
    call_deadline.begin_drain(0)
    with pytest.raises(ShuttingDown) as refused:
        _in_a_call(60, refuse_if_expired)
    assert isinstance(refused.value, Unavailable)
    assert refused.value.reason == "SERVER_SHUTTING_DOWN"
    with pytest.raises(CallExpired):
        _in_a_call(-1, refuse_if_expired)


@pytest.mark.usefixtures("draining")
def test_a_commit_running_when_the_drain_ends_is_cancelled_even_if_the_drain_began_after_it() -> None:
    watch = CommitWatch()
    cancelled = threading.Event()
    with watch.watching(cancelled.set):  # a call without a deadline: nothing to cancel yet
        assert not cancelled.wait(0.2)
        call_deadline.begin_drain(0.1)
        assert cancelled.wait(2)
    cancelled.clear()
    with watch.watching(cancelled.set):  # a COMMIT that ends in time is never cancelled
        pass
    assert not cancelled.wait(0.3)


def test_a_commit_running_at_its_calls_deadline_is_cancelled_and_sent_the_cancel_again_until_it_ends() -> None:
    watch = CommitWatch()
    cancels: list[float] = []

    def commit() -> None:
        with watch.watching(lambda: cancels.append(time.monotonic())):
            time.sleep(0.5)

    _in_a_call(0.1, commit)
    assert 2 <= len(cancels) <= 5  # at 0.1 s, then every 0.1 s until the COMMIT ended
