"""The executor under the gRPC server: a call never waits behind a blocked one, idle threads go away."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from server.rpc_threads import ElasticThreadPool


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of each test, so that no blocked call outlives it."""
    event = threading.Event()
    yield event
    event.set()


def _eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_call_runs_at_once_while_earlier_ones_are_blocked(release: threading.Event) -> None:
    pool = ElasticThreadPool(max_threads=100)
    blocked = [pool.submit(release.wait, 10) for _ in range(50)]
    assert pool.submit(lambda: "served").result(timeout=2) == "served"
    assert pool.thread_count == 51
    assert not any(call.done() for call in blocked)


def test_past_max_threads_a_call_waits_for_a_thread_to_finish(release: threading.Event) -> None:
    pool = ElasticThreadPool(max_threads=2)
    first, second = pool.submit(release.wait, 10), pool.submit(release.wait, 10)
    third = pool.submit(lambda: "served")
    time.sleep(0.2)
    assert not third.done()
    assert pool.thread_count == 2
    release.set()
    assert third.result(timeout=2) == "served"
    assert first.result(timeout=2)
    assert second.result(timeout=2)


def test_an_idle_thread_takes_the_next_call_instead_of_a_new_one() -> None:
    pool = ElasticThreadPool(max_threads=100)
    threads = {pool.submit(threading.get_ident).result(timeout=2) for _ in range(200)}
    # Not exactly 1: a call may come in between a thread finishing one and going back to wait for the next.
    assert len(threads) <= 3
    assert pool.thread_count == len(threads)


def test_threads_idle_for_idle_seconds_exit(release: threading.Event) -> None:
    pool = ElasticThreadPool(max_threads=100, idle_seconds=0.2)
    calls = [pool.submit(release.wait, 10) for _ in range(20)]
    assert pool.thread_count == 20
    release.set()
    assert all(call.result(timeout=2) for call in calls)
    assert _eventually(lambda: pool.thread_count == 0)
    assert pool.submit(lambda: "served").result(timeout=2) == "served"


def test_an_exception_reaches_the_future_and_the_thread_serves_on() -> None:
    pool = ElasticThreadPool(max_threads=1)
    failed = pool.submit(int, "not a number")
    with pytest.raises(ValueError, match="not a number"):
        failed.result(timeout=2)
    assert pool.submit(int, "7").result(timeout=2) == 7


def test_no_call_is_lost_when_threads_time_out_while_calls_arrive() -> None:
    pool = ElasticThreadPool(max_threads=8, idle_seconds=0.0005)
    calls = []
    for n in range(5000):
        calls.append(pool.submit(abs, -n))
        if n % 50 == 0:
            time.sleep(0.001)  # let threads time out in between
    assert [call.result(timeout=5) for call in calls] == list(range(5000))


def test_after_shutdown_submit_refuses_and_queued_calls_still_run(release: threading.Event) -> None:
    pool = ElasticThreadPool(max_threads=1)
    blocked = pool.submit(release.wait, 10)
    queued = pool.submit(lambda: "ran")
    pool.shutdown(wait=False)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)
    release.set()
    assert blocked.result(timeout=2)
    assert queued.result(timeout=2) == "ran"
    assert _eventually(lambda: pool.thread_count == 0)


def test_a_stalled_call_ends_at_its_connections_max_age_and_grace_and_frees_its_thread(
    release: threading.Event,
) -> None:
    # What ends a call that sent HEADERS and no message, when its client set no deadline (docs/reliability.md).
    pool = ElasticThreadPool(max_threads=1)  # so that a call submitted after it needs that very thread
    options = [("grpc.max_connection_age_ms", 500), ("grpc.max_connection_age_grace_ms", 500)]
    server = grpc.server(pool, options=options)
    echo = grpc.unary_unary_rpc_method_handler(lambda request, _context: request)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("probe.Probe", {"Echo": echo}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    def never_sends() -> Iterator[bytes]:
        release.wait(10)
        yield from ()

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            started = time.monotonic()
            stalled = channel.stream_unary("/probe.Probe/Echo").future(never_sends())
            assert _eventually(lambda: pool.thread_count == 1)
            failure = stalled.exception(timeout=5)
            assert isinstance(failure, grpc.RpcError)
            assert failure.code() == grpc.StatusCode.UNAVAILABLE
            assert 0.9 < time.monotonic() - started < 3
            assert pool.submit(lambda: "thread free").result(timeout=1) == "thread free"
    finally:
        server.stop(None)


def test_when_the_os_refuses_a_thread_the_call_waits_for_a_running_one(
    release: threading.Event, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pool = ElasticThreadPool(max_threads=100)
    blocked = pool.submit(release.wait, 10)

    def refuse(_thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)  # as under a container's pids limit
    waiting = pool.submit(lambda: "served")
    monkeypatch.undo()
    assert pool.thread_count == 1
    assert "cannot start RPC thread 2" in caplog.text
    time.sleep(0.1)
    assert not waiting.done()
    release.set()
    assert blocked.result(timeout=2)
    assert waiting.result(timeout=2) == "served"
