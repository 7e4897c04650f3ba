"""Racing writers on both databases: one etag wins once, a write without one waits its turn, and a retried
create never makes a twin."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from sqlalchemy import Connection, create_engine, text
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


def _code(result: Any) -> grpc.StatusCode:
    return result.code() if isinstance(result, grpc.RpcError) else grpc.StatusCode.OK


def _codes(results: list[Any]) -> list[grpc.StatusCode]:
    return sorted(map(_code, results), key=lambda c: c.name)


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


@contextlib.contextmanager
def _another_replica_writing(settings: Settings, task_name: str, statement: str) -> Iterator[Connection]:
    """Runs `statement` on the task's row (`:id`) in a transaction of its own and leaves it open, holding the
    row's lock (PostgreSQL) or the database's write lock (SQLite) until the block commits it."""
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            connection.execute(text(statement), {"id": task_name.rsplit("/", 1)[1]})
            yield connection
    finally:
        engine.dispose()


def _until_a_call_waits_on_a_lock(connection: Connection) -> None:
    """Returns once another session waits for a lock (PostgreSQL); SQLite cannot say, so it waits a little."""
    if connection.dialect.name == "sqlite":
        time.sleep(0.5)
        return
    probe = create_engine(connection.engine.url)
    try:
        with probe.connect() as watcher:
            for _ in range(100):
                waiting = watcher.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                ).scalar_one()
                if waiting:
                    return
                time.sleep(0.05)
    finally:
        probe.dispose()
    pytest.fail("the call never waited for the other writer's lock")


def _while_another_replica_writes(
    settings: Settings, task_name: str, statement: str, call: Callable[[], Any]
) -> Any:
    """`call`'s result (or RpcError), made while another replica's uncommitted `statement` holds the task."""
    with _another_replica_writing(settings, task_name, statement) as other, ThreadPoolExecutor(1) as pool:
        ours = pool.submit(call)
        _until_a_call_waits_on_a_lock(other)
        other.commit()
        try:
            return ours.result(timeout=20)
        except grpc.RpcError as error:
            return error


_THEIR_UPDATE = "UPDATE tasks SET title = 'theirs', revision = revision + 1 WHERE id = :id"


def test_an_update_without_an_etag_waits_for_a_concurrent_write_and_keeps_both(
    alice: User, settings: Settings
) -> None:
    # No etag: the caller asked for no concurrency check, so a write that landed meanwhile is not a conflict.
    task = alice.create_task("mine")
    result = _while_another_replica_writes(
        settings,
        task.name,
        _THEIR_UPDATE,
        lambda: alice.update_task(pb.Task(name=task.name, completed=True), ["completed"]),
    )
    assert _code(result) == grpc.StatusCode.OK, result
    stored = alice.get_task(task.name)
    assert (stored.title, stored.completed) == ("theirs", True)
    assert stored.etag == result.etag


def test_a_delete_without_an_etag_waits_for_a_concurrent_write_and_deletes(
    alice: User, settings: Settings
) -> None:
    task = alice.create_task("to delete")
    result = _while_another_replica_writes(
        settings, task.name, _THEIR_UPDATE, lambda: alice.delete_task(task.name)
    )
    assert _code(result) == grpc.StatusCode.OK, result
    with pytest.raises(grpc.RpcError) as gone:
        alice.get_task(task.name)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_update_with_the_etag_a_concurrent_write_replaced_is_aborted(alice: User, settings: Settings) -> None:
    task = alice.create_task("mine")
    result = _while_another_replica_writes(
        settings,
        task.name,
        _THEIR_UPDATE,
        lambda: alice.update_task(pb.Task(name=task.name, completed=True, etag=task.etag), ["completed"]),
    )
    assert _code(result) == grpc.StatusCode.ABORTED, result
    assert alice.get_task(task.name).completed is False


def test_an_update_of_a_task_deleted_meanwhile_is_not_found(alice: User, settings: Settings) -> None:
    task = alice.create_task("deleted under us")
    result = _while_another_replica_writes(
        settings,
        task.name,
        "DELETE FROM tasks WHERE id = :id",
        lambda: alice.update_task(pb.Task(name=task.name, completed=True), ["completed"]),
    )
    assert _code(result) == grpc.StatusCode.NOT_FOUND, result


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
