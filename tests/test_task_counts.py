"""The per-user task bound is exact, whoever writes the tasks: task_counts, kept by the database's own triggers,
always holds each owner's COUNT(*), and racing creates of one user never pass `max_tasks_per_user`."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, event, exc, text

from server.db import schema
from server.db.connections import WRITE_OPTION
from server.db.repository import TaskRepository
from server.db.session import Database
from server.errors import ResourceExhausted
from server.identity import Identity, set_identity
from server.tasks import TaskFields
from tests.seeding import seed_tasks

_BEFORE_THE_COUNTS = "0002"  # the last revision without task_counts


@pytest.fixture
def database(fresh_database_url: str) -> Iterator[Database]:
    """A migrated database of its own (SQLite, then PostgreSQL), with room for many connections at once."""
    database = Database(fresh_database_url, pool_size=16)
    database.migrate()
    yield database
    database.dispose()


def _as(user_id: str, fn: Callable[[], Any]) -> Any:
    """`fn()` as `user_id`, in a context of its own (as each RPC has)."""

    def inner() -> Any:
        set_identity(Identity(user_id=user_id))
        return fn()

    return contextvars.copy_context().run(inner)


def _counted(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT owner_id, tasks FROM task_counts")).all())


def _actual(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT owner_id, count(*) FROM tasks GROUP BY owner_id"))
        return dict(rows.all())


def _insert_by_hand(connection: Connection, owner_id: str, count: int, request_id: str | None = None) -> None:
    """Rows as another program writes them (a replica on the previous release, an operator's SQL)."""
    now = datetime(2026, 1, 1)  # naive UTC, as stored
    for _ in range(count):
        connection.execute(
            text(
                "INSERT INTO tasks (id, owner_id, title, description, completed, priority, create_time,"
                " update_time, request_id, revision)"
                " VALUES (:id, :owner, 'by hand', '', false, 0, :now, :now, :request_id, 1)"
            ),
            {"id": uuid.uuid4().hex, "owner": owner_id, "now": now, "request_id": request_id},
        )


def test_racing_creates_of_one_user_at_the_bound_let_exactly_one_through(database: Database) -> None:
    """Twelve replicas' creates of one user at once, with 19 of 20 tasks kept: one fits, eleven are refused.

    Each create pauses after its first statement until all twelve have run theirs (or 3 s have passed): the
    worst interleaving, in which a bound counted before the insert lets every one of them through."""
    bound, racers = 20, 12
    seed_tasks(database, "alice", bound - 1)
    repository = TaskRepository(database, max_tasks_per_user=bound)
    everyone_started = threading.Barrier(racers)
    paused: set[int] = set()  # the racers past their pause

    @event.listens_for(database.engine, "after_cursor_execute")
    def pause_once(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        racer = threading.get_ident()
        if "tasks" not in statement or racer in paused:
            return
        paused.add(racer)
        # Broken after 3 s when the others wait for a lock this one holds: it goes on alone.
        with contextlib.suppress(threading.BrokenBarrierError):
            everyone_started.wait(timeout=3)

    outcomes: list[str] = []

    def create(number: int) -> None:
        try:
            _as("alice", lambda: repository.create(fields=TaskFields(title=f"racer {number}")))
        except ResourceExhausted as refused:
            outcomes.append(refused.reason)
        else:
            outcomes.append("created")

    threads = [threading.Thread(target=create, args=(number,)) for number in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    event.remove(database.engine, "after_cursor_execute", pause_once)

    assert sorted(outcomes) == ["TASK_LIMIT_REACHED"] * (racers - 1) + ["created"], outcomes
    assert _actual(database.engine) == {"alice": bound}
    assert _counted(database.engine) == {"alice": bound}


def test_the_count_follows_creates_deletes_refusals_and_retries(database: Database) -> None:
    repository = TaskRepository(database, max_tasks_per_user=3)
    alices = [_as("alice", lambda n=n: repository.create(fields=TaskFields(title=f"a{n}"))) for n in range(3)]
    _as("bob", lambda: repository.create(fields=TaskFields(title="b")))
    assert _counted(database.engine) == _actual(database.engine) == {"alice": 3, "bob": 1}

    with pytest.raises(ResourceExhausted):
        _as("alice", lambda: repository.create(fields=TaskFields(title="one too many")))
    assert _counted(database.engine) == _actual(database.engine) == {"alice": 3, "bob": 1}

    _as("alice", lambda: repository.delete(task_id=alices[0].task_id, etag=None))
    request_id = str(uuid.uuid4())
    first = _as("alice", lambda: repository.create(fields=TaskFields(title="kept"), request_id=request_id))
    retried = _as("alice", lambda: repository.create(fields=TaskFields(title="kept"), request_id=request_id))
    assert retried.task_id == first.task_id
    assert _counted(database.engine) == _actual(database.engine) == {"alice": 3, "bob": 1}

    for record in [*alices[1:], first]:
        _as("alice", lambda record=record: repository.delete(task_id=record.task_id, etag=None))
    assert _counted(database.engine) == _actual(database.engine) == {"bob": 1}  # no row left for alice


def test_a_create_losing_its_request_id_to_a_racing_retry_counts_one_task(database: Database) -> None:
    """The retry on another replica commits first: this create's INSERT fails on the unique request_id and it
    answers with that task; the failed INSERT leaves no count behind."""
    repository = TaskRepository(database, max_tasks_per_user=5)
    request_id = str(uuid.uuid4())
    other_replica = database.engine.connect()

    retried: list[bool] = []

    # As the create's transaction gets its connection: before it takes SQLite's write lock.
    @event.listens_for(database.engine, "engine_connect")
    def the_retry_commits_first(_: Any) -> None:
        if not retried:
            retried.append(True)
            with other_replica.begin():
                _insert_by_hand(other_replica, "alice", 1, request_id=request_id)

    try:
        created = _as("alice", lambda: repository.create(fields=TaskFields(title="once"), request_id=request_id))
    finally:
        event.remove(database.engine, "engine_connect", the_retry_commits_first)
        other_replica.close()
    assert created.title == "by hand"  # the racing retry's task
    assert _counted(database.engine) == _actual(database.engine) == {"alice": 1}


def test_tasks_written_by_plain_sql_are_counted(database: Database) -> None:
    """A replica still on the previous release (no counter in its code) or an operator's SQL keeps the count."""
    with database.engine.begin() as connection:
        _insert_by_hand(connection, "alice", 4)
        _insert_by_hand(connection, "bob", 2)
    assert _counted(database.engine) == _actual(database.engine) == {"alice": 4, "bob": 2}

    with database.engine.begin() as connection:
        three = "SELECT id FROM tasks WHERE owner_id = 'alice' LIMIT 3"
        connection.execute(text(f"DELETE FROM tasks WHERE id IN ({three})"))  # noqa: S608 (no values in it)
    assert _counted(database.engine) == _actual(database.engine) == {"alice": 1, "bob": 2}

    with database.engine.begin() as connection:
        connection.execute(text("DELETE FROM tasks"))  # a purge, one statement
    assert _counted(database.engine) == _actual(database.engine) == {}

    repository = TaskRepository(database, max_tasks_per_user=4)
    with database.engine.begin() as connection:
        _insert_by_hand(connection, "alice", 4)
    with pytest.raises(ResourceExhausted):
        _as("alice", lambda: repository.create(fields=TaskFields(title="past the hand-made four")))


def test_a_tasks_owner_never_changes(database: Database) -> None:
    """task_counts counts by owner: moving a task is refused (an operator moves tasks by INSERT and DELETE)."""
    with database.engine.begin() as connection:
        _insert_by_hand(connection, "alice", 2)
    with pytest.raises(exc.DatabaseError, match="owner_id never changes"), database.engine.begin() as connection:
        connection.execute(text("UPDATE tasks SET owner_id = 'bob'"))
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE tasks SET owner_id = 'alice', title = 'same owner'"))  # not a change
    assert _counted(database.engine) == _actual(database.engine) == {"alice": 2}


def _migrate_to(engine: Engine, revision: str) -> None:
    schema.migrate(engine, write_option=WRITE_OPTION, target=revision)


def _downgrade_to(engine: Engine, revision: str) -> None:
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        command.downgrade(schema.alembic_config(connection), revision)


def test_the_migration_counts_the_tasks_already_there_and_downgrades(fresh_database_url: str) -> None:
    database = Database(fresh_database_url, pool_size=2)
    try:
        _migrate_to(database.engine, _BEFORE_THE_COUNTS)
        with database.engine.begin() as connection:
            _insert_by_hand(connection, "alice", 7)
            _insert_by_hand(connection, "bob", 1)

        database.migrate()
        assert _counted(database.engine) == {"alice": 7, "bob": 1}

        _downgrade_to(database.engine, _BEFORE_THE_COUNTS)
        with database.engine.begin() as connection:
            _insert_by_hand(connection, "carol", 2)  # no trigger left to fail on a missing table
            connection.execute(text("DELETE FROM tasks WHERE owner_id = 'bob'"))
        assert schema.current_revision(database.engine) == _BEFORE_THE_COUNTS

        database.migrate()
        assert _counted(database.engine) == {"alice": 7, "carol": 2}
    finally:
        database.dispose()
