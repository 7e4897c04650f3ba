"""SIGTERM while a PostgreSQL COMMIT is slow: the call ends as its COMMIT did, before grpcio's grace runs out.

grpcio cancels every call still running when the grace ends, and the client sees UNAVAILABLE ("Cancelling all
calls"), which its retry policy sends to another replica. A COMMIT still running then must not be saved
afterwards: an UpdateTask with an etag would be ABORTED by its own change, a CreateTask stored twice.
"""

from __future__ import annotations

import signal
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, make_url, text
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from client.channel import CHANNEL_OPTIONS
from tests.e2e.conftest import ServerProcess, start_server, stop_server
from tests.faults.conftest import ScratchDatabase
from tests.faults.write_faults import At, write_fault
from tests.support import mint_token

pytestmark = pytest.mark.e2e

_GRACE_SECONDS = 1.5
_VICTIM = "todo-drain-victim"  # the application_name of the replica being stopped: only its COMMITs stall
# Longer than the grace: a COMMIT left to run would be saved well after grpcio cancelled its call.
_STALL_SECONDS = 5
_STALL_VICTIM_COMMITS = (
    f"IF current_setting('application_name') = '{_VICTIM}' AND NEW.title LIKE 'slow%' "
    f"THEN PERFORM pg_sleep({_STALL_SECONDS}); END IF;"
)


def _stalled_commits(scratch: ScratchDatabase) -> int:
    with scratch.admin.connect() as connection:
        return connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = :name AND application_name = :victim AND wait_event = 'PgSleep'"
            ),
            {"name": scratch.name, "victim": _VICTIM},
        ).scalar_one()


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _outcome(future: grpc.Future) -> tuple[grpc.StatusCode, str]:
    try:
        future.result()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def test_a_commit_running_when_the_grace_ends_is_answered_as_it_ended(
    scratch_database: ScratchDatabase, tmp_path: Path
) -> None:
    victim_url = make_url(scratch_database.url).update_query_dict({"application_name": _VICTIM})
    victim = start_server(
        tmp_path,
        "--database-url",
        victim_url.render_as_string(hide_password=False),
        "--grace-seconds",
        str(_GRACE_SECONDS),
    )
    other: ServerProcess | None = None
    try:
        other = start_server(
            tmp_path, "--database-url", scratch_database.url, env={"BETTER_AUTH_SECRET": victim.secret}
        )
        user = f"drain{uuid.uuid4().hex[:8]}"
        metadata = (("authorization", f"Bearer {mint_token(victim.secret.encode(), user)}"),)
        target = f"ipv4:{victim.address},{other.address}"
        with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:  # the client's own: retries
            stub = pb_grpc.TaskServiceStub(channel)
            seeds = [
                stub.CreateTask(
                    pb.CreateTaskRequest(parent="users/me", task=pb.Task(title=f"seed {i}")),
                    metadata=metadata,
                    timeout=10,
                ).task
                for i in range(2)
            ]
            for _ in range(6):  # both replicas connected: round robin then alternates between them
                stub.GetTask(pb.GetTaskRequest(name=seeds[0].name), metadata=metadata, timeout=10)
            calls: list[tuple[str, str, grpc.Future]] = []
            with write_fault(scratch_database, _STALL_VICTIM_COMMITS, at=At.COMMIT):
                # Two of each, one after the other: round robin sends one of each pair to each replica.
                for seed in seeds:
                    request = pb.UpdateTaskRequest(task=pb.Task(name=seed.name, title=f"slow {seed.name}"))
                    request.task.etag = seed.etag
                    request.update_mask.paths.append("title")
                    calls.append(
                        ("update", seed.name, stub.UpdateTask.future(request, metadata=metadata, timeout=20))
                    )
                for request_id in ("", "", str(uuid.uuid4()), str(uuid.uuid4())):
                    title = f"slow new {uuid.uuid4().hex}"
                    request = pb.CreateTaskRequest(
                        parent="users/me", task=pb.Task(title=title), request_id=request_id
                    )
                    calls.append(("create", title, stub.CreateTask.future(request, metadata=metadata, timeout=20)))
                _wait_for(lambda: _stalled_commits(scratch_database) >= 3, 3)  # about half of the six
                assert _stalled_commits(scratch_database) >= 1, "no COMMIT stalled on the replica to stop"
                sigterm_at = time.monotonic()
                victim.process.send_signal(signal.SIGTERM)
                assert victim.process.wait(timeout=_GRACE_SECONDS + 10) == 0, victim.log()
                exited_after = time.monotonic() - sigterm_at
                outcomes = [(kind, key, _outcome(future)) for kind, key, future in calls]
                # A COMMIT left running would be saved by now.
                assert _wait_for(lambda: _stalled_commits(scratch_database) == 0, _STALL_SECONDS + 5)
    finally:
        stop_server(victim)
        if other is not None:
            stop_server(other)

    assert exited_after < _GRACE_SECONDS + 1
    # The stalled calls were answered by the server (their COMMIT cancelled), not cancelled by grpcio.
    assert "code=UNAVAILABLE" in victim.log().split("stopping: draining")[1], victim.log()
    engine = create_engine(scratch_database.url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, title, revision FROM tasks WHERE owner_id = :user"), {"user": user}
            ).all()
    finally:
        engine.dispose()
    titles = [title for _id, title, _revision in rows]
    by_name = {f"users/{user}/tasks/{task_id}": (title, revision) for task_id, title, revision in rows}
    mismatches = []
    for kind, key, (code, details) in outcomes:
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE):
            mismatches.append(f"{kind} {key}: {code.name} {details}")  # ABORTED: its own change was saved
            continue
        if kind == "update":
            title, revision = by_name[key]
            saved = title == f"slow {key}"
            if saved != (code == grpc.StatusCode.OK) or revision not in (1, 2) or saved != (revision == 2):
                mismatches.append(f"update {key}: {code.name} {details}, stored {title!r} revision {revision}")
        else:
            stored = titles.count(key)
            if stored != (1 if code == grpc.StatusCode.OK else 0):
                mismatches.append(f"create {key}: {code.name} {details}, stored {stored} times")
    assert not mismatches, "\n".join(mismatches)


def test_a_sqlite_write_waiting_for_the_lock_when_the_grace_ends_is_not_saved_afterwards(tmp_path: Path) -> None:
    """The write lock goes after the drain's end, just before grpcio's grace does: the writes waiting for it
    are refused (SERVER_SHUTTING_DOWN), not committed in the last moments, where grpcio may cancel their calls
    (UNAVAILABLE) mid-COMMIT."""
    server = start_server(tmp_path, "--grace-seconds", str(_GRACE_SECONDS))
    user = f"drain{uuid.uuid4().hex[:8]}"
    metadata = (("authorization", f"Bearer {mint_token(server.secret.encode(), user)}"),)
    outcomes: dict[str, tuple[grpc.StatusCode, str]] = {}
    try:
        with grpc.insecure_channel(server.address) as channel:  # no retries: what this replica answered
            stub = pb_grpc.TaskServiceStub(channel)
            stub.CreateTask(pb.CreateTaskRequest(parent="users/me", task=pb.Task(title="seed")), metadata=metadata)
            blocker = sqlite3.connect(tmp_path / "todo.db", isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                calls = {}
                for with_deadline in (True, False) * 6:
                    title = f"waiting {uuid.uuid4().hex}"
                    request = pb.CreateTaskRequest(parent="users/me", task=pb.Task(title=title))
                    timeout = 30 if with_deadline else None
                    calls[title] = stub.CreateTask.future(request, metadata=metadata, timeout=timeout)
                time.sleep(0.5)
                server.process.send_signal(signal.SIGTERM)
                time.sleep(_GRACE_SECONDS - 0.2)  # after the drain's end, before grpcio's grace ends
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            outcomes = {title: _outcome(future) for title, future in calls.items()}
            assert server.process.wait(timeout=10) == 0, server.log()
        time.sleep(0.5)  # a write that got the lock has committed by now
    finally:
        stop_server(server)
    with sqlite3.connect(tmp_path / "todo.db") as check:
        titles = [row[0] for row in check.execute("SELECT title FROM tasks WHERE owner_id = ?", (user,))]
    mismatches = [
        f"{title}: {code.name} {details}, stored {titles.count(title)} times"
        for title, (code, details) in outcomes.items()
        if titles.count(title) != (1 if code == grpc.StatusCode.OK else 0)
    ]
    assert not mismatches, "\n".join(mismatches)
    assert {code for code, _details in outcomes.values()} == {grpc.StatusCode.UNAVAILABLE}, outcomes
    assert any("shutting down" in details for _code, details in outcomes.values()), outcomes
