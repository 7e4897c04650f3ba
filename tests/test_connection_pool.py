"""The PostgreSQL connection pool as the server runs it: one connection per RPC thread and not one more,
dead connections replaced or retried so that no call sees them, and a call that cannot get one fails
UNAVAILABLE fast."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import pytest
from sqlalchemy import Connection, Engine, Pool, create_engine, event, text
from sqlalchemy.engine import make_url
from todo.v1 import task_service_pb2 as pb

from server.app import TodoServer
from server.config import Settings
from server.db.connections import POSTGRES_POOL_RECYCLE_SECONDS
from tests.support import User, every_pooled_connection, failure_of, wait_until

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


def _fill_with_idle_connections(pool: Pool) -> None:
    """Opens every connection the pool may hold and gives them back: calls one at a time would reuse one."""
    held = [pool.connect() for _ in range(pool.size())]
    for connection in held:
        connection.close()


def _kill_every_backend(database_url: str) -> None:
    """What a PostgreSQL restart or a failover does to every idle connection of the server's pool."""
    backends = _server_backends(database_url)
    assert backends
    admin = create_engine(make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for pid in backends:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()
    # pg_terminate_backend only signals: wait until they are gone, so that they die idle, not mid-call.
    deadline = time.monotonic() + 10
    while set(backends) & set(_server_backends(database_url)):
        assert time.monotonic() < deadline, "the terminated backends did not exit"
        time.sleep(0.05)


def test_connections_killed_while_idle_are_replaced_before_a_call_gets_them(
    todo_server: TodoServer, alice: User, database_url: str
) -> None:
    task = alice.create_task("survives a restart")
    _fill_with_idle_connections(todo_server.database.engine.pool)
    _kill_every_backend(database_url)
    # No call sees the failure: a write's connection is pinged at checkout and replaced, a read's first
    # statement is sent again on a fresh connection.
    for n in range(3 * todo_server.database.engine.pool.size()):
        alice.list_tasks()
        assert alice.get_task(task.name) == task
        alice.create_task(f"written after the restart {n}")


def test_a_write_that_finds_its_connection_dead_replaces_every_older_one(
    todo_server: TodoServer, alice: User, database_url: str
) -> None:
    """After a restart, the first write's ping finds a dead connection: every connection older than that is
    then replaced at its next checkout (as SQLAlchemy's own pre-ping does), so the reads that follow do not
    each send a statement into a dead connection first."""
    task = alice.create_task("read after a restart")
    pool = todo_server.database.engine.pool
    _fill_with_idle_connections(pool)
    _kill_every_backend(database_url)
    alice.create_task("the first write after the restart")
    dead_connections_used: list[BaseException | None] = []

    def invalidated(_dbapi_connection, _record, error) -> None:  # type: ignore[no-untyped-def]
        dead_connections_used.append(error)

    event.listen(pool, "invalidate", invalidated)
    try:
        for _ in range(3 * pool.size()):
            assert alice.get_task(task.name) == task
            alice.list_tasks()
    finally:
        event.remove(pool, "invalidate", invalidated)
    assert dead_connections_used == []


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


def _create_task(user: User) -> object:  # a write, through a Session
    request = pb.CreateTaskRequest(parent="users/me", task=pb.Task(title="waits for a connection"))
    return user.stub.CreateTask(request, metadata=user.metadata, timeout=30)


def _get_task(user: User) -> object:  # a read, straight on a pooled driver connection (Database.owned_reads)
    request = pb.GetTaskRequest(name=f"users/me/tasks/{'0' * 32}")
    return user.stub.GetTask(request, metadata=user.metadata, timeout=30)


@pytest.mark.parametrize("call", [_create_task, _get_task], ids=["CreateTask", "GetTask"])
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


def _kill_backend(database_url: str, pid: int) -> None:
    """What a PostgreSQL restart or failover does to one connection: its backend is gone before it is used."""
    admin = create_engine(make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()
    deadline = time.monotonic() + 10
    while pid in _server_backends(database_url):
        assert time.monotonic() < deadline, "the terminated backend did not exit"
        time.sleep(0.02)


@contextmanager
def connections_killed_at_checkout(
    pool: Pool, database_url: str, *, times: int, before_server_checks: bool = False
) -> Iterator[list[int]]:
    """Kills the backend of each of the next `times` connections the pool hands out: after the server's own
    checkout listener, or (`before_server_checks`) before it, as if it had died idle in the pool."""
    killed: list[int] = []

    def kill(dbapi_connection, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
        if len(killed) < times:
            killed.append(dbapi_connection.info.backend_pid)
            _kill_backend(database_url, killed[-1])

    event.listen(pool, "checkout", kill, insert=before_server_checks)
    try:
        yield killed
    finally:
        event.remove(pool, "checkout", kill)


# A BFF call without a deadline reads in autocommit (one statement, no transaction); with one, in a
# transaction that bounds the statement (SET LOCAL statement_timeout). Both must recover alike.
_READS = {
    "GetTask-no-deadline": lambda user, name: (
        user.stub.GetTask(pb.GetTaskRequest(name=name), metadata=user.metadata).task
    ),
    "GetTask-deadline": lambda user, name: user.get_task(name),
    "ListTasks": lambda user, _name: user.list_tasks().tasks[0],
}


@pytest.mark.parametrize("read", _READS.values(), ids=_READS.keys())
def test_a_read_whose_connection_died_runs_again_once_on_a_fresh_one(
    todo_server: TodoServer, alice: User, database_url: str, read: Callable[[User, str], object]
) -> None:
    """Reads take a connection without a ping (a round trip per call): one that died idle fails at the
    read's first statement, which is then sent once more on a fresh connection. The caller sees nothing."""
    task = alice.create_task("read while the database restarts")
    pool = todo_server.database.engine.pool
    with connections_killed_at_checkout(pool, database_url, times=1) as killed:
        answer = read(alice, task.name)
    assert killed
    assert answer == task
    assert killed[0] not in _server_backends(database_url)


def test_a_read_whose_fresh_connection_dies_too_fails_unavailable_and_both_are_replaced(
    todo_server: TodoServer, alice: User, database_url: str
) -> None:
    task = alice.create_task("read while the database keeps restarting")
    pool = todo_server.database.engine.pool
    with connections_killed_at_checkout(pool, database_url, times=2) as killed:
        failure = failure_of(lambda: alice.get_task(task.name))
    assert len(killed) == 2  # tried once more, and only once
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    for _ in range(2 * pool.size()):  # every connection the pool hands out now works
        assert alice.get_task(task.name) == task


def test_a_write_never_gets_a_dead_connection(todo_server: TodoServer, alice: User, database_url: str) -> None:
    """A write is not sent again (it may have been done): its connection is pinged at checkout instead,
    and one that died is replaced before the write's first statement."""
    pool = todo_server.database.engine.pool
    with connections_killed_at_checkout(pool, database_url, times=1, before_server_checks=True) as killed:
        task = alice.create_task("written while the database restarts")
    assert killed
    assert alice.get_task(task.name) == task


# (autocommit, isolation level, read only) of a connection as the pool hands it out: a transaction that
# commits once, at the database's own isolation level, and may write.
_AS_A_WRITE_NEEDS = (False, None, None)


def _settings_of_every_pooled_connection(engine: Engine) -> set[tuple[object, object, object]]:
    """The settings of every connection the pool holds, as a set."""
    with every_pooled_connection(engine) as held:
        return {
            (driver.autocommit, driver.isolation_level, driver.read_only)
            for driver in (connection.driver_connection for connection in held)
        }


def test_reads_give_their_connections_back_as_they_took_them(todo_server: TodoServer, alice: User) -> None:
    """GetTask reads in autocommit, ListTasks in a REPEATABLE READ, READ ONLY transaction: a connection left
    so would commit each statement of the next write on its own, or refuse it."""
    task = alice.create_task("read in autocommit")
    for _ in range(3):
        _READS["GetTask-no-deadline"](alice, task.name)
        _READS["ListTasks"](alice, task.name)
    assert _settings_of_every_pooled_connection(todo_server.database.engine) == {_AS_A_WRITE_NEEDS}
    alice.create_task("written after the reads")


_CALLS_AFTER_EVERY_CHECKOUT_FAILS = {
    "CreateTask": lambda user: user.create_task("written while the database keeps dropping connections"),
    "GetTask": lambda user: user.get_task(f"users/me/tasks/{'0' * 32}"),
}


@pytest.mark.parametrize("call", _CALLS_AFTER_EVERY_CHECKOUT_FAILS.values(), ids=_CALLS_AFTER_EVERY_CHECKOUT_FAILS)
def test_a_database_that_drops_every_new_connection_gives_unavailable_not_internal(
    todo_server: TodoServer, alice: User, database_url: str, call: Callable[[User], object]
) -> None:
    """A database that accepts connections and drops them at once (a failover in progress): the pool's
    pinged checkout gives up after its reconnect attempts, and the caller is told to retry later."""
    pool = todo_server.database.engine.pool
    with connections_killed_at_checkout(pool, database_url, times=10, before_server_checks=True) as killed:
        failure = failure_of(lambda: call(alice))
    assert len(killed) >= 2  # the pool reconnected, and gave up
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    task = alice.create_task("written once the database is back")
    assert alice.get_task(task.name) == task


def test_a_snapshot_read_whose_deadline_passed_while_it_waited_for_a_connection_leaves_it_as_it_was(
    todo_server: TodoServer, alice: User
) -> None:
    """The deadline passes after the read got its connection but before its first statement, when the
    REPEATABLE READ, READ ONLY settings are made and not yet bounded: that connection must not reach a write."""
    engine = todo_server.database.engine
    checked_out = threading.Event()

    def slow_checkout(_dbapi_connection, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
        time.sleep(1.0)  # a checkout that ends after the call's deadline: the pool's wait no longer does
        checked_out.set()

    event.listen(engine.pool, "checkout", slow_checkout)
    try:
        request = pb.ListTasksRequest(parent="users/me")
        failure = failure_of(lambda: alice.stub.ListTasks(request, metadata=alice.metadata, timeout=0.5))
        assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert checked_out.wait(5)
    finally:
        event.remove(engine.pool, "checkout", slow_checkout)
    assert wait_until(lambda: engine.pool.checkedout() == 0)  # the expired read gave its connection back
    assert _settings_of_every_pooled_connection(engine) == {_AS_A_WRITE_NEEDS}
    assert alice.create_task("written after the expired read").title == "written after the expired read"
