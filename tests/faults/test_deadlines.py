"""A call whose deadline passes while it waits for the database writes nothing and lets its connection go."""

from __future__ import annotations

import sqlite3
import time

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb

from server.app import TodoServer
from server.config import Settings
from tests.support import User, failure_of

pytestmark = pytest.mark.sqlite_only

_DEADLINE = 0.5


def test_a_write_whose_deadline_passes_waiting_for_a_lock_is_not_kept(
    todo_server: TodoServer, settings: Settings, alice: User
) -> None:
    request = pb.CreateTaskRequest(parent="users/me", task=pb.Task(title="too late"))
    blocker = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the server's write waits for this lock
    try:
        started = time.monotonic()
        failure = failure_of(lambda: alice.stub.CreateTask(request, metadata=alice.metadata, timeout=_DEADLINE))
        assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < _DEADLINE + 1
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
