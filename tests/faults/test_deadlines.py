"""A call whose deadline passes while it waits for the database writes nothing and lets its connection go."""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import Connection, create_engine, text
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import TodoServer
from server.config import Settings
from tests.faults.conftest import ScratchDatabase, fault_server
from tests.faults.write_faults import At, write_fault
from tests.support import User, every_pooled_connection, failure_of, mint_token, wait_until

_DEADLINE = 0.5


def _assert_ends_at_its_deadline(call: Callable[[], object]) -> None:
    started = time.monotonic()
    assert failure_of(call).code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < _DEADLINE + 1


@pytest.mark.sqlite_only
def test_a_write_whose_deadline_passes_waiting_for_a_lock_is_not_kept(
    todo_server: TodoServer, settings: Settings, alice: User
) -> None:
    request = pb.CreateTaskRequest(parent="users/me", task=pb.Task(title="too late"))
    blocker = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the server's write waits for this lock
    try:
        create = alice.stub.CreateTask
        _assert_ends_at_its_deadline(lambda: create(request, metadata=alice.metadata, timeout=_DEADLINE))
        # Well before the 5 s busy timeout, the server has given its connection back: it stopped waiting
        # at the deadline instead of holding a connection for a caller who is gone.
        time.sleep(0.5)
        assert todo_server.database.engine.pool.checkedout() == 0
    finally:
        blocker.execute("ROLLBACK")  # the lock goes: a server still waiting would now write
        blocker.close()
    time.sleep(0.3)
    assert alice.list_tasks().total_size == 0
    assert alice.create_task("after the deadline").title == "after the deadline"


_POOL_WAIT_CALLS = {
    "CreateTask": lambda user, metadata: user.stub.CreateTask(
        pb.CreateTaskRequest(parent="users/me", task=pb.Task(title="too late")),
        metadata=metadata,
        timeout=_DEADLINE,
    ),
    "GetTask": lambda user, metadata: user.stub.GetTask(
        pb.GetTaskRequest(name=f"users/me/tasks/{'0' * 32}"), metadata=metadata, timeout=_DEADLINE
    ),
    "ListTasks": lambda user, metadata: user.stub.ListTasks(
        pb.ListTasksRequest(parent="users/me"), metadata=metadata, timeout=_DEADLINE
    ),
}


@pytest.mark.parametrize("call", _POOL_WAIT_CALLS.values(), ids=_POOL_WAIT_CALLS)
def test_a_call_whose_deadline_passes_waiting_for_a_pooled_connection_ends_at_its_deadline(
    todo_server: TodoServer, alice: User, caplog: pytest.LogCaptureFixture, call
) -> None:  # type: ignore[no-untyped-def]
    """Every connection taken (a leak, or --max-workers calls each holding one): the call waits for one only
    until its deadline, not for the pool's own 5 s (10 s on SQLite) with its thread and its turn held for a
    caller who has gone. The server itself answers DEADLINE_EXCEEDED then, and nothing is written."""
    caplog.set_level(logging.INFO, logger="todo.access")
    request_id = f"pool-wait-{secrets.token_hex(6)}"
    metadata = (*alice.metadata, ("x-request-id", request_id))

    def answered() -> str | None:
        lines = [r.getMessage() for r in caplog.records if r.name == "todo.access"]
        return next((line for line in lines if f"request_id={request_id}" in line), None)

    with every_pooled_connection(todo_server.database.engine):
        _assert_ends_at_its_deadline(lambda: call(alice, metadata))
        assert wait_until(answered, seconds=_DEADLINE + 1), "the server still waits for a connection"
    fields = dict(field.split("=", 1) for field in cast(str, answered()).split()[1:])
    assert fields["code"] == "DEADLINE_EXCEEDED"
    assert float(fields["duration_ms"]) < (_DEADLINE + 0.5) * 1000
    assert alice.list_tasks().total_size == 0


@pytest.fixture
def postgres_server(postgres_url: str, secret: bytes) -> Iterator[TodoServer]:
    with fault_server(postgres_url, secret) as server:
        yield server


def _assert_nothing_left_waiting(blocker: Connection, server: TodoServer) -> None:
    """The server's statement was cancelled at the deadline: no backend still waits on the blocker's lock,
    and the call gave its connection back."""
    time.sleep(0.5)
    waiting = blocker.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    ).scalar_one()
    assert waiting == 0
    assert server.database.engine.pool.checkedout() == 0


@pytest.fixture
def bob(postgres_server: TodoServer, secret: bytes) -> Iterator[User]:
    """A fresh user of `postgres_server`, on a channel of their own."""
    with grpc.insecure_channel(f"127.0.0.1:{postgres_server.port}") as channel:
        user_id = f"deadline{secrets.token_hex(4)}"
        yield User(user_id, mint_token(secret, user_id), pb_grpc.TaskServiceStub(channel))


@contextmanager
def _holding_a_lock(postgres_url: str, statement: str, **parameters: object) -> Iterator[Connection]:
    """A connection of the test's own that holds the lock `statement` takes, until the block ends."""
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as blocker:
            blocker.execute(text(statement), parameters)
            yield blocker
            blocker.rollback()
    finally:
        engine.dispose()


def test_a_postgresql_update_whose_deadline_passes_waiting_for_a_row_lock_is_cancelled(
    postgres_server: TodoServer, postgres_url: str, bob: User
) -> None:
    task = bob.create_task("before")
    row_lock = "SELECT id FROM tasks WHERE id = :id FOR UPDATE"
    with _holding_a_lock(postgres_url, row_lock, id=task.name.rsplit("/")[-1]) as blocker:
        request = pb.UpdateTaskRequest(task=pb.Task(name=task.name, title="too late"))
        request.update_mask.paths.append("title")
        update = bob.stub.UpdateTask
        _assert_ends_at_its_deadline(lambda: update(request, metadata=bob.metadata, timeout=_DEADLINE))
        _assert_nothing_left_waiting(blocker, postgres_server)
    time.sleep(0.3)
    assert bob.get_task(task.name).title == "before"


_DEADLINE_READS = {
    "GetTask": lambda user, name: user.stub.GetTask(
        pb.GetTaskRequest(name=name), metadata=user.metadata, timeout=_DEADLINE
    ),
    "ListTasks": lambda user, _name: user.stub.ListTasks(
        pb.ListTasksRequest(parent="users/me"), metadata=user.metadata, timeout=_DEADLINE
    ),
}


@pytest.mark.parametrize("read", _DEADLINE_READS.values(), ids=_DEADLINE_READS)
def test_a_postgresql_read_whose_deadline_passes_waiting_for_a_lock_is_cancelled(
    postgres_server: TodoServer, postgres_url: str, bob: User, read
) -> None:  # type: ignore[no-untyped-def]
    """A read waits only for a lock on the whole table (a migration's ALTER TABLE, say), and ends at its
    deadline like a write: its statement is cancelled, and the settings that bounded it stay with it."""
    task = bob.create_task("read while a migration holds the table")
    with _holding_a_lock(postgres_url, "LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE") as blocker:
        _assert_ends_at_its_deadline(lambda: read(bob, task.name))
        _assert_nothing_left_waiting(blocker, postgres_server)
    assert read(bob, task.name)  # the table is free again
    # A later call without a deadline has the connection's own limit, not what the read set.
    with every_pooled_connection(postgres_server.database.engine) as held:
        for connection in held:
            cursor = connection.cursor()
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone() == ("30s",)
            cursor.close()


def _no_commit_left_running(scratch: ScratchDatabase) -> bool:
    with scratch.admin.connect() as connection:
        sleeping = connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name AND wait_event = 'PgSleep'"),
            {"name": scratch.name},
        ).scalar_one()
    return sleeping == 0


_SLOW_COMMIT_WRITES = {
    "CreateTask": lambda user, _task: user.stub.CreateTask(
        pb.CreateTaskRequest(parent="users/me", task=pb.Task(title="too late")),
        metadata=user.metadata,
        timeout=_DEADLINE,
    ),
    "UpdateTask": lambda user, task: user.stub.UpdateTask(
        pb.UpdateTaskRequest(
            task=pb.Task(name=task.name, title="too late", etag=task.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        ),
        metadata=user.metadata,
        timeout=_DEADLINE,
    ),
}


@pytest.mark.parametrize("write", _SLOW_COMMIT_WRITES.values(), ids=_SLOW_COMMIT_WRITES)
def test_a_postgresql_commit_still_running_at_the_deadline_is_cancelled_and_writes_nothing(
    scratch_database: ScratchDatabase, server_on_scratch: TodoServer, secret: bytes, write
) -> None:  # type: ignore[no-untyped-def]
    """statement_timeout does not reach a COMMIT (PostgreSQL stops it before committing, deferred triggers and
    all): the server cancels a COMMIT still running at the deadline, and the caller told DEADLINE_EXCEEDED
    finds nothing written, not the change saved a moment later."""
    with grpc.insecure_channel(f"127.0.0.1:{server_on_scratch.port}") as channel:
        user_id = f"deadline{secrets.token_hex(4)}"
        user = User(user_id, mint_token(secret, user_id), pb_grpc.TaskServiceStub(channel))
        task = user.create_task("before")
        with write_fault(scratch_database, "PERFORM pg_sleep(3);", at=At.COMMIT):
            _assert_ends_at_its_deadline(lambda: write(user, task))
            time.sleep(0.5)
            assert _no_commit_left_running(scratch_database)
            assert server_on_scratch.database.engine.pool.checkedout() == 0
        # The trigger is gone once the stalled COMMIT (if any) has ended: what it saved is there now.
        assert user.all_tasks() == [task]
