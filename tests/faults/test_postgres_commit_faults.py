"""A PostgreSQL write that loses its connection: during the COMMIT the outcome is unknown (the database may
have applied it), so the caller gets UNKNOWN with COMMIT_OUTCOME_UNKNOWN, which clients do not retry blindly;
before the COMMIT, or a COMMIT refused on a live connection, nothing was written: UNAVAILABLE, retried."""

from __future__ import annotations

import contextvars
import secrets
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import TodoServer
from server.db.models import Task
from server.db.session import Database
from server.errors import Unavailable
from server.identity import Identity, set_identity
from tests.faults.conftest import ScratchDatabase
from tests.faults.write_faults import REFUSE, STALL, At, end_stalled_backend, write_fault
from tests.support import RpcFailure, User, failure_of, mint_token

_UNKNOWN_OUTCOME = (grpc.StatusCode.UNKNOWN, "COMMIT_OUTCOME_UNKNOWN")
_NOTHING_WRITTEN = (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
_TITLE = "the write under test"

Metadata = tuple[tuple[str, str], ...]


def _update_with_etag(stub: pb_grpc.TaskServiceStub, metadata: Metadata, task: pb.Task) -> grpc.Future:
    request = pb.UpdateTaskRequest(task=pb.Task(name=task.name, title=_TITLE, etag=task.etag))
    request.update_mask.paths.append("title")
    return stub.UpdateTask.future(request, metadata=metadata, timeout=10)


def _delete(stub: pb_grpc.TaskServiceStub, metadata: Metadata, task: pb.Task) -> grpc.Future:
    return stub.DeleteTask.future(pb.DeleteTaskRequest(name=task.name), metadata=metadata, timeout=10)


def _create_without_request_id(stub: pb_grpc.TaskServiceStub, metadata: Metadata, _task: pb.Task) -> grpc.Future:
    request = pb.CreateTaskRequest(parent="users/me", task=pb.Task(title=_TITLE))
    return stub.CreateTask.future(request, metadata=metadata, timeout=10)


# One write each, sent without waiting for its answer (the test ends its backend meanwhile).
_WRITES: dict[str, Callable[[pb_grpc.TaskServiceStub, Metadata, pb.Task], grpc.Future]] = {
    "UpdateTask with an etag": _update_with_etag,
    "DeleteTask": _delete,
    "CreateTask without a request_id": _create_without_request_id,
}


@pytest.fixture
def alice(server_on_scratch: TodoServer, secret: bytes) -> Iterator[User]:
    with grpc.insecure_channel(f"127.0.0.1:{server_on_scratch.port}") as channel:  # no retry policy
        user_id = f"alice{secrets.token_hex(4)}"
        yield User(user_id, mint_token(secret, user_id), pb_grpc.TaskServiceStub(channel))


def _lose_connection_during(scratch: ScratchDatabase, at: At, write: Callable[[], grpc.Future]) -> RpcFailure:
    """How `write` fails when its backend is ended as it stalls `at` its statement or its COMMIT."""
    with write_fault(scratch, STALL, at=at):
        sent = write()
        end_stalled_backend(scratch)
        return failure_of(sent.result)


def _assert_safe_message(failure: RpcFailure) -> None:
    for leak in ("psycopg", "terminat", "administrator", "pg_", "Traceback", "UPDATE", "DELETE", "INSERT"):
        assert leak not in failure.message, failure.message


@pytest.mark.parametrize("write", _WRITES)
def test_a_write_whose_commit_loses_its_connection_is_told_the_outcome_is_unknown(
    scratch_database: ScratchDatabase, alice: User, write: str
) -> None:
    task = alice.create_task("before the fault")
    failure = _lose_connection_during(
        scratch_database, At.COMMIT, lambda: _WRITES[write](alice.stub, alice.metadata, task)
    )
    assert (failure.code, failure.reason) == _UNKNOWN_OUTCOME, failure
    assert "read it back before retrying" in failure.message
    _assert_safe_message(failure)


@pytest.mark.parametrize("write", _WRITES)
def test_a_write_that_loses_its_connection_before_commit_is_unavailable_and_writes_nothing(
    scratch_database: ScratchDatabase, alice: User, write: str
) -> None:
    task = alice.create_task("before the fault")
    failure = _lose_connection_during(
        scratch_database, At.STATEMENT, lambda: _WRITES[write](alice.stub, alice.metadata, task)
    )
    assert (failure.code, failure.reason) == _NOTHING_WRITTEN, failure
    _assert_safe_message(failure)
    assert alice.all_tasks() == [task]


@pytest.mark.parametrize("write", _WRITES)
def test_a_commit_refused_on_a_live_connection_is_unavailable_and_writes_nothing(
    scratch_database: ScratchDatabase, alice: User, write: str
) -> None:
    task = alice.create_task("before the fault")
    with write_fault(scratch_database, REFUSE, at=At.COMMIT):  # as a serialization failure at COMMIT does
        failure = failure_of(_WRITES[write](alice.stub, alice.metadata, task).result)
    assert (failure.code, failure.reason) == _NOTHING_WRITTEN, failure
    _assert_safe_message(failure)
    assert alice.all_tasks() == [task]


def test_a_create_with_a_request_id_whose_commit_loses_its_connection_is_unavailable_and_safe_to_retry(
    scratch_database: ScratchDatabase, alice: User
) -> None:
    request = pb.CreateTaskRequest(parent="users/me", task=pb.Task(title=_TITLE), request_id=str(uuid.uuid4()))
    create = alice.stub.CreateTask
    failure = _lose_connection_during(
        scratch_database, At.COMMIT, lambda: create.future(request, metadata=alice.metadata, timeout=10)
    )
    # A retry with the same request_id returns the task if this commit did land: UNAVAILABLE, which clients
    # retry, with the reason that says it may have been saved, for one that retries by hand.
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "COMMIT_OUTCOME_UNKNOWN"), failure
    assert "request_id" in failure.message
    retried = alice.stub.CreateTask(request, metadata=alice.metadata, timeout=10).task
    assert alice.stub.CreateTask(request, metadata=alice.metadata, timeout=10).task == retried
    assert [task.name for task in alice.all_tasks()] == [retried.name]


def test_statements_a_transaction_left_unflushed_run_before_its_commit(scratch_database: ScratchDatabase) -> None:
    """A caller that never flushed: its INSERT is sent before the COMMIT, so losing it there wrote nothing."""
    database = Database(scratch_database.url)
    database.migrate()

    def add_without_flushing() -> None:
        set_identity(Identity(user_id="carol"))
        now = datetime.now(UTC)
        task = Task(id=uuid.uuid4().hex, owner_id="carol", title=_TITLE, create_time=now, update_time=now)
        with database.transaction(write=True) as session:
            session.add(task)

    try:
        with write_fault(scratch_database, STALL, at=At.STATEMENT), ThreadPoolExecutor(1) as pool:
            added = pool.submit(contextvars.copy_context().run, add_without_flushing)
            end_stalled_backend(scratch_database)
            with pytest.raises(Unavailable):
                added.result(timeout=10)
    finally:
        database.dispose()
