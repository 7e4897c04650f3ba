"""One signed-in user's slow calls must not take every running turn (`--max-workers`) from everyone else.

A user can make their own calls slow at will: a ListTasks `query` scans every one of their tasks (on SQLite
through a Python lower() per row), and nothing bounds how many tasks they keep. Measured before the fix
(SQLite, 20,000 tasks with long descriptions, 50 such calls in flight from one user, well under the 100
they may have): every other user's ListTasks waited 9 s or hit its 10 s deadline, behind that user's calls
queued for the 16 turns. Here the slow calls are writes waiting for the SQLite write lock, held by hand:
the same turns held, without depending on the machine's speed.
"""

from __future__ import annotations

import sqlite3
import time
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from todo.v1 import task_service_pb2 as pb

from server.config import Settings
from server.limits import caller_turns
from tests.support import User

pytestmark = pytest.mark.sqlite_only


def test_one_users_slow_calls_leave_running_turns_for_everyone_else(
    settings: Settings, alice: User, bob: User
) -> None:
    path = settings.database_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # alice's creates wait for the write lock (up to 5 s), each in a turn
    try:
        with futures.ThreadPoolExecutor(3 * settings.max_workers) as clients:
            stuck = [clients.submit(alice.create_task, f"stuck {n}") for n in range(3 * settings.max_workers)]
            time.sleep(0.5)  # every one of them has arrived: running, or waiting for a turn
            started = time.monotonic()
            listed = bob.stub.ListTasks(pb.ListTasksRequest(parent="users/me"), metadata=bob.metadata, timeout=3)
            waited = time.monotonic() - started
            blocker.execute("ROLLBACK")
            created = [call.result().title for call in stuck]
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()
    assert listed.total_size == 0
    assert waited < 1.0, f"bob waited {waited:.1f}s for a turn alice's calls held"
    # Alice is slowed, never refused: once the lock is gone, every create she sent is saved.
    assert sorted(created) == sorted(f"stuck {n}" for n in range(3 * settings.max_workers))
    assert alice.list_tasks().total_size == 3 * settings.max_workers


def test_a_caller_gets_a_quarter_of_the_turns_and_at_least_one() -> None:
    assert caller_turns(16) == 4
    assert caller_turns(4) == 1
    assert caller_turns(1) == 1


def test_calls_without_a_caller_take_only_shared_turns(bob: User, grpc_channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(grpc_channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == serving
    assert bob.list_tasks().total_size == 0
