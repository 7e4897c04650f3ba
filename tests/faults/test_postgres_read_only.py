"""PostgreSQL that accepts no writes (a standby during a failover, `default_transaction_read_only`): writes
get UNAVAILABLE, which clients retry, not INTERNAL; reads go on; nothing changes; writes resume by themselves."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import grpc
from sqlalchemy import text
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import TodoServer
from tests.faults.conftest import ScratchDatabase
from tests.faults.report import FaultRow
from tests.support import User, failure_of, mint_token


def _set_read_only(scratch: ScratchDatabase, read_only: bool) -> None:
    """Makes the scratch database's new sessions read-only (or not) and ends its open ones, as a failover does."""
    with scratch.admin.connect() as connection:
        setting = "SET default_transaction_read_only = on" if read_only else "RESET default_transaction_read_only"
        connection.execute(text(f'ALTER DATABASE "{scratch.name}" {setting}'))
    scratch.end_sessions()


def _eventually(call: Callable[[], Any], seconds: float = 10) -> Any:
    """`call`'s result once it succeeds: the first calls after the connections were cut may fail."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_read_only_postgresql_gives_unavailable_for_writes_keeps_reads_and_recovers(
    scratch_database: ScratchDatabase, server_on_scratch: TodoServer, secret: bytes, fault_report: list[FaultRow]
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server_on_scratch.port}") as channel:
        user_id = f"ro{secrets.token_hex(4)}"
        alice = User(user_id, mint_token(secret, user_id), pb_grpc.TaskServiceStub(channel))
        kept = alice.create_task("before read-only")
        _set_read_only(scratch_database, True)
        try:
            assert _eventually(lambda: alice.get_task(kept.name)) == kept  # reads still work
            writes = {
                "CreateTask": lambda: alice.create_task("while read-only"),
                "UpdateTask": lambda: alice.update_task(pb.Task(name=kept.name, completed=True), ["completed"]),
                "DeleteTask": lambda: alice.delete_task(kept.name),
            }
            failures = {method: failure_of(write) for method, write in writes.items()}
            for method, failure in failures.items():
                assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"), (
                    method,
                    failure,
                )
                assert "transaction" not in failure.message, failure.message  # no driver text
        finally:
            _set_read_only(scratch_database, False)
        restored_at = time.monotonic()
        after = _eventually(lambda: alice.create_task("after read-only"))
        recovery = time.monotonic() - restored_at
        tasks = alice.all_tasks()
    assert sorted(task.title for task in tasks) == ["after read-only", "before read-only"]
    assert next(task for task in tasks if task.name == kept.name) == kept  # not completed, not deleted
    assert after.title == "after read-only"
    fault_report.append(
        FaultRow(
            fault="PostgreSQL: database read-only (default_transaction_read_only + pg_terminate_backend)",
            load="1 client: a write before; a read, a create, an update and a delete during; a write after",
            client_saw=", ".join(f"{method} {failure.code.name}" for method, failure in failures.items())
            + "; GetTask OK",
            acknowledged=2,
            found=len(tasks),
            recovery=f"{recovery:.2f}s after writes were allowed again, no restart",
        )
    )
