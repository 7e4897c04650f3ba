"""No user ever reads or changes another user's tasks: through every RPC and through the data layer."""

from __future__ import annotations

import contextvars
import secrets
import threading

import grpc
import pytest
from sqlalchemy import delete, func, select, text, update
from todo.v1 import task_service_pb2 as pb

from server.db.models import Task
from server.db.owner_scope import CrossUserWriteError, OwnerScopeError
from server.db.repository import TaskRepository
from server.db.session import Database
from server.errors import NotFound
from server.identity import Identity, NoIdentityError, set_identity
from server.tasks import TaskFields
from tests.support import User, failure_of, mint_token


def assert_denied(call) -> None:  # type: ignore[no-untyped-def]
    failure = failure_of(call)
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "RESOURCE_NOT_OWNED")


def test_bob_cannot_read_update_or_delete_alices_task(alice: User, bob: User) -> None:
    task = alice.create_task("alice's secret", description="private")
    assert_denied(lambda: bob.get_task(task.name))
    assert_denied(lambda: bob.update_task(pb.Task(name=task.name, title="pwned"), ["title"]))
    assert_denied(lambda: bob.delete_task(task.name))
    assert alice.get_task(task.name) == task


def test_bob_cannot_list_or_create_under_alice(alice: User, bob: User) -> None:
    alice.create_task("alice's")
    assert_denied(lambda: bob.list_tasks(parent=f"users/{alice.user_id}"))
    assert_denied(lambda: bob.create_task("planted", parent=f"users/{alice.user_id}"))
    assert alice.list_tasks().total_size == 1


def test_bobs_listing_never_shows_alices_tasks(alice: User, bob: User) -> None:
    for i in range(5):
        alice.create_task(f"alice {i}", description="milk")
    bob.create_task("bob's", description="milk")
    for options in ({}, {"query": "milk"}, {"completed": False}, {"order_by": "title"}):
        listed = bob.list_tasks(**options)
        assert [t.title for t in listed.tasks] == ["bob's"]
        assert listed.total_size == 1


@pytest.mark.parametrize("injection", ["'OR'1'='1", "'--", "\\'OR'1'='1", "''"])
def test_a_user_id_with_sql_quotes_is_a_value_never_sql(
    secret: bytes, grpc_stub, alice: User, injection: str
) -> None:  # type: ignore[no-untyped-def]
    """A user id is a token's `sub`, which the identity provider may let hold quotes. On PostgreSQL a GetTask
    with a deadline has its values quoted into the query string by the driver (Database.owned_reads): if
    that quoting failed, `owner_id = 'm'OR'1'='1'` would match everyone's rows."""
    user_id = f"m{secrets.token_hex(4)}{injection}"
    mallory = User(user_id, mint_token(secret, user_id), grpc_stub)
    alices = alice.create_task("alice's secret")
    failure = failure_of(lambda: mallory.get_task(f"users/me/tasks/{alices.name.rsplit('/', 1)[1]}"))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    own = mallory.create_task("mallory's")
    assert own.name.startswith(f"users/{user_id}/tasks/")
    assert mallory.get_task(own.name) == own
    assert [task.name for task in mallory.list_tasks().tasks] == [own.name]


def test_denial_does_not_reveal_whether_the_task_exists(alice: User, bob: User) -> None:
    real = alice.create_task("x")
    made_up = f"users/{alice.user_id}/tasks/{'f' * 32}"
    real_failure, made_up_failure = (
        failure_of(lambda: bob.get_task(real.name)),
        failure_of(lambda: bob.get_task(made_up)),
    )
    assert (real_failure.code, real_failure.message) == (made_up_failure.code, made_up_failure.message)


def test_user_ids_are_case_sensitive(secret: bytes, grpc_stub) -> None:  # type: ignore[no-untyped-def]
    """Better Auth ids are mixed-case: `AbC` and `abc` are two people."""
    upper_id = "Usr" + secrets.token_hex(8).upper()
    upper, lower = (User(uid, mint_token(secret, uid), grpc_stub) for uid in (upper_id, upper_id.lower()))
    task = upper.create_task("mine")
    assert task.name.startswith(f"users/{upper_id}/tasks/")
    assert_denied(lambda: lower.get_task(task.name))
    assert lower.list_tasks().total_size == 0


def test_bob_cannot_page_with_alices_page_token(alice: User, bob: User) -> None:
    for i in range(3):
        alice.create_task(f"t{i}")
        bob.create_task(f"b{i}")
    token = alice.list_tasks(page_size=1).next_page_token
    failure = failure_of(lambda: bob.list_tasks(page_size=1, page_token=token))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT


# --- the data layer directly -----------------------------------------------------------------------


@pytest.fixture
def database(fresh_database_url: str) -> Database:  # type: ignore[no-untyped-def]
    """A migrated database of its own (SQLite, then PostgreSQL) with nobody's rows in it."""
    database = Database(fresh_database_url, pool_size=2)
    database.migrate()
    yield database
    database.dispose()


def as_user(user_id: str) -> None:
    set_identity(Identity(user_id=user_id))


def run_as(user_id: str, fn):  # type: ignore[no-untyped-def]
    """`fn()` as `user_id`, in a context of its own (as each RPC has)."""

    def inner():  # type: ignore[no-untyped-def]
        as_user(user_id)
        return fn()

    return contextvars.copy_context().run(inner)


def test_repository_refuses_to_run_without_an_identity(database: Database) -> None:
    repository = TaskRepository(database)
    with pytest.raises(NoIdentityError):
        repository.create(fields=TaskFields(title="x"))
    with pytest.raises(NoIdentityError), database.transaction() as session:
        session.scalars(select(Task)).all()


def test_every_orm_select_is_scoped_to_the_caller(database: Database) -> None:
    repository = TaskRepository(database)

    alices = run_as("alice", lambda: repository.create(fields=TaskFields(title="alice's")))
    run_as("bob", lambda: repository.create(fields=TaskFields(title="bob's")))

    def bobs_view():  # type: ignore[no-untyped-def]
        with database.transaction() as session:
            everything = session.scalars(select(Task)).all()
            by_id = session.scalars(select(Task).where(Task.id == alices.task_id)).all()
            counted = session.scalar(select(func.count()).select_from(Task))
            fetched = session.get(Task, alices.task_id)
            return [t.title for t in everything], by_id, counted, fetched

    titles, by_id, counted, fetched = run_as("bob", bobs_view)
    assert titles == ["bob's"]
    assert by_id == []
    assert counted == 1
    assert fetched is None
    with database.engine.connect() as connection:  # both rows really are there
        assert connection.execute(text("SELECT count(*) FROM tasks")).scalar() == 2


def test_flush_refuses_a_row_owned_by_someone_else(database: Database) -> None:
    def plant() -> None:
        as_user("mallory")
        with database.transaction(write=True) as session:
            session.add(Task(id="e" * 32, owner_id="alice", title="planted", create_time=None, update_time=None))

    with pytest.raises(CrossUserWriteError):
        contextvars.copy_context().run(plant)


def test_one_statement_object_reused_by_many_users_stays_scoped_to_each(database: Database) -> None:
    """The repository builds its lookups once; the owner is bound per execution, never remembered."""
    repository = TaskRepository(database)

    created = {user: run_as(user, lambda: repository.create(fields=TaskFields(title="mine"))) for user in "abc"}
    for _ in range(3):
        for user, record in created.items():
            assert run_as(user, lambda record=record: repository.get(task_id=record.task_id)).owner_id == user
            for other in created.keys() - {user}:
                with pytest.raises(NotFound):
                    run_as(other, lambda record=record: repository.get(task_id=record.task_id))


def test_orm_update_and_delete_statements_are_scoped_too(database: Database) -> None:
    as_user("alice")
    alices = TaskRepository(database).create(fields=TaskFields(title="alice's"))

    def vandalise() -> None:
        as_user("bob")
        with database.transaction(write=True) as session:
            session.execute(update(Task).values(title="owned"))
            session.execute(delete(Task))

    contextvars.copy_context().run(vandalise)
    assert TaskRepository(database).get(task_id=alices.task_id).title == "alice's"


def test_a_statement_cannot_bring_its_own_owner_scope(database: Database) -> None:
    def smuggle() -> None:
        as_user("bob")
        with database.transaction() as session:
            session.scalars(select(Task), {"todo_scope_owner_id": "alice"}).all()

    with pytest.raises(OwnerScopeError):
        contextvars.copy_context().run(smuggle)


# --- reads by key, which run without a Session (Database.fetch_owned) ----------------------------------


def test_reads_without_a_session_are_scoped_like_orm_statements(database: Database) -> None:
    repository = TaskRepository(database)
    alices = run_as("alice", lambda: repository.create(fields=TaskFields(title="alice's")))
    bobs = run_as("bob", lambda: repository.create(fields=TaskFields(title="bob's")))

    every_title = select(Task.title)
    by_id = select(Task.title).where(Task.id == alices.task_id)
    assert run_as("bob", lambda: database.fetch_owned(every_title, {})) == [("bob's",)]
    assert run_as("bob", lambda: database.fetch_owned(by_id, {})) == []
    assert run_as("alice", lambda: database.fetch_owned(by_id, {})) == [("alice's",)]
    with pytest.raises(NotFound):
        run_as("bob", lambda: repository.get(task_id=alices.task_id))
    assert run_as("bob", lambda: repository.get(task_id=bobs.task_id)) == bobs


def test_a_read_without_a_session_refuses_to_run_without_an_identity(database: Database) -> None:
    repository = TaskRepository(database)
    created = run_as("alice", lambda: repository.create(fields=TaskFields(title="alice's")))
    nobody = contextvars.Context()  # empty, as an RPC's before the auth layer has run
    with pytest.raises(NoIdentityError):
        nobody.run(lambda: repository.get(task_id=created.task_id))
    with pytest.raises(NoIdentityError):
        nobody.run(lambda: database.fetch_owned(select(Task.title), {}))


def test_a_read_the_owner_scope_cannot_reach_is_refused_not_run_unscoped(database: Database) -> None:
    """Loader criteria only reach ORM statements: a Core select on the table would run with no owner filter."""
    run_as("alice", lambda: TaskRepository(database).create(fields=TaskFields(title="alice's")))
    tasks = Task.__table__
    for statement in (select(tasks.c.title), select(func.count()).select_from(tasks)):
        with pytest.raises(OwnerScopeError):
            run_as("bob", lambda statement=statement: database.fetch_owned(statement, {}))


def test_a_read_without_a_session_cannot_bring_its_own_owner_scope(database: Database) -> None:
    run_as("alice", lambda: TaskRepository(database).create(fields=TaskFields(title="alice's")))
    with pytest.raises(OwnerScopeError):
        run_as("bob", lambda: database.fetch_owned(select(Task.title), {"todo_scope_owner_id": "alice"}))


def test_the_reads_of_one_block_see_one_snapshot(database: Database) -> None:
    """A ListTasks page runs several statements: a write committed between them must not show in some only."""
    repository = TaskRepository(database)
    created = run_as("alice", lambda: repository.create(fields=TaskFields(title="before")))

    def rename() -> None:
        run_as("alice", lambda: repository.update(task_id=created.task_id, changes={"title": "after"}, etag=None))

    def page() -> tuple[list[tuple[str]], list[tuple[str]]]:
        as_user("alice")
        with database.owned_reads() as read:
            first = read(select(Task.title), {})
            writer = threading.Thread(target=rename)  # another call, committing meanwhile
            writer.start()
            writer.join()
            return first, read(select(Task.title), {})

    assert contextvars.Context().run(page) == ([("before",)], [("before",)])
    assert run_as("alice", lambda: repository.get(task_id=created.task_id)).title == "after"
