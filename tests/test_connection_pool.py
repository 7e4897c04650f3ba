"""The PostgreSQL connection pool as the server runs it: one connection per RPC thread and not one more,
dead connections replaced before a call gets them, and a call that cannot get one fails UNAVAILABLE fast."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import make_url
from todo.v1 import task_service_pb2 as pb

from server.app import TodoServer
from server.config import Settings
from server.db.session import POSTGRES_POOL_RECYCLE_SECONDS
from tests.support import User, failure_of

# What the README promises (section "Database and migrations").
_POOL_TIMEOUT_SECONDS = 5


@pytest.fixture(scope="module")
def database_url(postgres_url: str) -> str:
    """Only PostgreSQL: these are the settings for a database server a replica shares with others."""
    return postgres_url


def _server_backends(url: str) -> list[int]:
    """The pids of the PostgreSQL backends connected to the server's database (not this query's own)."""
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            rows = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"),
                {"name": make_url(url).database},
            )
            return [row.pid for row in rows]
    finally:
        admin.dispose()


def test_the_pool_is_sized_to_the_rpc_threads_and_never_overflows(
    todo_server: TodoServer, settings: Settings
) -> None:
    pool = todo_server.database.engine.pool
    assert pool.size() == settings.max_workers + 1  # one per running call, one for the readiness check
    assert pool.overflow() <= 0  # QueuePool counts overflow from -size; max_overflow 0 keeps it <= 0
    assert pool.timeout() == _POOL_TIMEOUT_SECONDS
    assert pool._recycle == POSTGRES_POOL_RECYCLE_SECONDS


def test_connections_killed_while_idle_are_replaced_before_a_call_gets_them(
    todo_server: TodoServer, alice: User, database_url: str
) -> None:
    task = alice.create_task("survives a restart")
    for _ in range(3 * todo_server.database.engine.pool.size()):
        alice.list_tasks()  # fills the pool with idle connections
    backends = _server_backends(database_url)
    assert backends
    admin = create_engine(make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for pid in backends:  # what a PostgreSQL restart or a failover does to every idle connection
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()
    # pg_terminate_backend only signals: wait until they are gone, so that they die idle, not mid-call.
    deadline = time.monotonic() + 10
    while set(backends) & set(_server_backends(database_url)):
        assert time.monotonic() < deadline, "the terminated backends did not exit"
        time.sleep(0.05)
    # pool_pre_ping: each dead connection is found at checkout and replaced; no call sees the failure.
    for _ in range(3 * todo_server.database.engine.pool.size()):
        alice.list_tasks()  # through a Session
        assert alice.get_task(task.name) == task  # straight on the driver connection (Database.fetch_owned)


@pytest.fixture
def every_connection_taken(todo_server: TodoServer) -> Iterator[list[Connection]]:
    """Holds every connection of the server's pool, as a leak would; given back at the end of the test."""
    engine = todo_server.database.engine
    held = [engine.connect() for _ in range(engine.pool.size())]
    yield held
    for connection in held:
        connection.close()


def test_readiness_still_answers_when_every_running_call_holds_a_connection(
    todo_server: TodoServer, settings: Settings
) -> None:
    """A replica busy with --max-workers long queries is busy, not broken: its health must not say so."""
    engine = todo_server.database.engine
    busy_calls = [engine.connect() for _ in range(settings.max_workers)]
    try:
        started = time.monotonic()
        assert todo_server.database.ping()
        assert time.monotonic() - started < 1  # not a wait for a connection to come back
    finally:
        for connection in busy_calls:
            connection.close()


def _list_tasks(user: User) -> object:  # through a Session
    return user.stub.ListTasks(pb.ListTasksRequest(parent="users/me"), metadata=user.metadata, timeout=30)


def _get_task(user: User) -> object:  # straight on a pooled driver connection (Database.fetch_owned)
    request = pb.GetTaskRequest(name=f"users/me/tasks/{'0' * 32}")
    return user.stub.GetTask(request, metadata=user.metadata, timeout=30)


@pytest.mark.parametrize("call", [_list_tasks, _get_task], ids=["ListTasks", "GetTask"])
def test_a_call_that_cannot_get_a_connection_fails_unavailable_at_the_pool_timeout(
    every_connection_taken: list[Connection], alice: User, call: Callable[[User], object]
) -> None:
    started = time.monotonic()
    failure = failure_of(lambda: call(alice))
    waited = time.monotonic() - started
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.reason == "DATABASE_UNAVAILABLE"
    # Not one connection more than the pool's size (max_overflow 0), and not a hang until the 30 s deadline.
    assert _POOL_TIMEOUT_SECONDS - 0.5 <= waited < 20
    every_connection_taken.pop().close()
    assert alice.list_tasks().total_size >= 0  # one given back: served again


def test_a_read_whose_connection_dies_mid_call_fails_unavailable_and_the_connection_is_replaced(
    todo_server: TodoServer, alice: User, database_url: str
) -> None:
    """Pre-ping cannot catch a connection that dies after checkout: that read fails UNAVAILABLE, and the
    dead connection is thrown away rather than given to the next call."""
    task = alice.create_task("read while the database restarts")
    pool = todo_server.database.engine.pool
    killed: list[int] = []

    def kill_once(dbapi_connection, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
        if killed:
            return
        killed.append(dbapi_connection.info.backend_pid)
        admin = create_engine(make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed[0]})
        finally:
            admin.dispose()
        deadline = time.monotonic() + 10
        while killed[0] in _server_backends(database_url):  # gone before the read is sent on it
            assert time.monotonic() < deadline, "the terminated backend did not exit"
            time.sleep(0.02)

    event.listen(pool, "checkout", kill_once)  # after the pre-ping: the connection was alive when checked
    try:
        failure = failure_of(lambda: alice.get_task(task.name))
    finally:
        event.remove(pool, "checkout", kill_once)
    assert killed
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    for _ in range(2 * pool.size()):  # every connection the pool hands out now works
        assert alice.get_task(task.name) == task
