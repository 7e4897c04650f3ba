"""Racing writers on both databases: one etag wins once, and a retried create never makes a twin."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import TodoServer, run_server
from server.config import Settings
from tests.support import User

_ROUNDS = 8


def _race(*calls: Callable[[], Any]) -> list[Any]:
    """Runs `calls` at the same moment on their own threads; each result is a value or the RpcError."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait(timeout=10)
        try:
            return call()
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _codes(results: list[Any]) -> list[grpc.StatusCode]:
    return sorted(
        (r.code() if isinstance(r, grpc.RpcError) else grpc.StatusCode.OK for r in results), key=lambda c: c.name
    )


def test_two_updates_with_the_same_etag_exactly_one_wins(alice: User) -> None:
    task = alice.create_task("contested")
    for round_number in range(_ROUNDS):
        current = alice.get_task(task.name)
        titles = (f"first {round_number}", f"second {round_number}")
        results = _race(
            *(
                lambda title=title, etag=current.etag: alice.update_task(
                    pb.Task(name=task.name, title=title, etag=etag), ["title"]
                )
                for title in titles
            )
        )
        assert _codes(results) == [grpc.StatusCode.ABORTED, grpc.StatusCode.OK]
        winner = next(r for r in results if not isinstance(r, grpc.RpcError))
        stored = alice.get_task(task.name)
        assert stored.title == winner.title
        assert stored.etag == winner.etag != current.etag


def test_update_and_delete_with_the_same_etag_exactly_one_wins(alice: User) -> None:
    for _ in range(_ROUNDS):
        task = alice.create_task("update or delete")
        results = _race(
            lambda task=task: alice.update_task(pb.Task(name=task.name, title="kept", etag=task.etag), ["title"]),
            lambda task=task: alice.delete_task(task.name, etag=task.etag),
        )
        codes = _codes(results)
        assert codes.count(grpc.StatusCode.OK) == 1, codes
        assert set(codes) - {grpc.StatusCode.OK} <= {grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND}


@pytest.fixture(scope="module")
def second_replica(settings: Settings) -> Iterator[TodoServer]:
    """Another server process-alike on the same database, as a second replica behind a load balancer."""
    with run_server(settings) as server:
        yield server


def test_a_create_retried_on_two_replicas_at_once_makes_one_task(alice: User, second_replica: TodoServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{second_replica.port}") as channel:
        alice_there = User(alice.user_id, alice.token, pb_grpc.TaskServiceStub(channel))
        for round_number in range(_ROUNDS):
            request_id = str(uuid.uuid4())
            results = _race(
                *(
                    lambda user=user, rid=request_id, n=round_number: user.create_task(f"once {n}", request_id=rid)
                    for user in (alice, alice_there)
                )
            )
            assert _codes(results) == [grpc.StatusCode.OK, grpc.StatusCode.OK]
            assert results[0] == results[1]
    assert alice.list_tasks().total_size == _ROUNDS
