"""The client's retry policy (client/channel.py) against faults on a real PostgreSQL-backed server: a write
that wrote nothing (UNAVAILABLE) is retried and saved once, one whose outcome is unknown is not retried, and
retries stop while most calls fail, so that a fleet of clients does not multiply a struggling server's load."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from client import OutcomeUnknown, TaskClient, Unavailable
from server.app import TodoServer
from tests.faults.conftest import ScratchDatabase, fault_server
from tests.faults.lost_commit_reply import LostCommitReply
from tests.faults.write_faults import REFUSE_ONCE, STALL, At, end_stalled_backend, write_fault
from tests.support import mint_token


@pytest.fixture
def client(server_on_scratch: TodoServer, secret: bytes) -> Iterator[TaskClient]:
    token = mint_token(secret, f"retrier{secrets.token_hex(4)}")
    with TaskClient(f"127.0.0.1:{server_on_scratch.port}", token=token, default_timeout=20) as opened:
        yield opened


def test_a_write_refused_at_commit_is_retried_and_saved_once(
    scratch_database: ScratchDatabase, client: TaskClient, attempts: Callable[[str], list[str]]
) -> None:
    task = client.create_task("draft")
    with write_fault(scratch_database, REFUSE_ONCE, at=At.COMMIT):
        # The retry carries the same etag and succeeds: the refused attempt changed nothing.
        updated = client.update_task(task.name, title="final", etag=task.etag)
    assert attempts("UpdateTask") == ["UNAVAILABLE", "OK"]
    assert client.get_task(task.name) == updated
    assert updated.title == "final"


def test_a_write_whose_commit_outcome_is_unknown_is_not_retried(
    scratch_database: ScratchDatabase, client: TaskClient, attempts: Callable[[str], list[str]]
) -> None:
    task = client.create_task("draft")
    with write_fault(scratch_database, STALL, at=At.COMMIT), ThreadPoolExecutor(1) as pool:
        update = pool.submit(client.update_task, task.name, title="final", etag=task.etag)
        end_stalled_backend(scratch_database)
        with pytest.raises(OutcomeUnknown) as raised:
            update.result(timeout=30)
    assert raised.value.reason == "COMMIT_OUTCOME_UNKNOWN"
    assert attempts("UpdateTask") == ["UNKNOWN"]


@pytest.fixture
def lost_commit_reply(scratch_database: ScratchDatabase) -> Iterator[LostCommitReply]:
    proxy = LostCommitReply(scratch_database.url)
    yield proxy
    proxy.close()


def test_an_update_whose_commit_reply_is_lost_is_saved_and_not_retried(
    lost_commit_reply: LostCommitReply, secret: bytes, attempts: Callable[[str], list[str]]
) -> None:
    token = mint_token(secret, f"retrier{secrets.token_hex(4)}")
    with (
        fault_server(lost_commit_reply.url, secret) as server,
        TaskClient(f"127.0.0.1:{server.port}", token=token) as client,
    ):
        task = client.create_task("draft")
        lost_commit_reply.arm()
        # Retried, this update would fail on its own change: ABORTED, as the etag it carries is stale now.
        with pytest.raises(OutcomeUnknown):
            client.update_task(task.name, title="final", etag=task.etag)
        assert lost_commit_reply.reply_lost.is_set()
        assert client.get_task(task.name).title == "final"  # saved, as the error said it might be
    assert attempts("UpdateTask") == ["UNKNOWN"]


def test_a_create_whose_commit_reply_is_lost_and_whose_retries_fail_can_be_retried_by_hand_without_a_duplicate(
    scratch_database: ScratchDatabase, lost_commit_reply: LostCommitReply, secret: bytes
) -> None:
    token = mint_token(secret, f"retrier{secrets.token_hex(4)}")
    with (
        fault_server(lost_commit_reply.url, secret) as server,
        TaskClient(f"127.0.0.1:{server.port}", token=token, default_timeout=30) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        client.list_tasks()  # connected through the proxy before it is armed
        lost_commit_reply.arm()
        create = pool.submit(client.create_task, "pay rent")
        assert lost_commit_reply.reply_lost.wait(10)  # saved, and the server was not told
        scratch_database.cut_connections()  # a failover begins: the channel's retries all fail
        with pytest.raises(Unavailable) as raised:
            create.result(timeout=60)
        scratch_database.restore_connections()
        assert raised.value.request_id is not None
        again = client.create_task("pay rent", request_id=raised.value.request_id)
        assert [task.name for task in client.iter_tasks()] == [again.name]


def test_retries_stop_while_most_calls_fail(
    scratch_database: ScratchDatabase, client: TaskClient, attempts: Callable[[str], list[str]]
) -> None:
    client.list_tasks()  # connected while the database is there
    scratch_database.cut_connections()
    for _ in range(3):
        with pytest.raises(Unavailable):
            client.list_tasks()
    failed = [code for code in attempts("ListTasks") if code != "OK"]
    assert set(failed) == {"UNAVAILABLE"}
    # Unthrottled, each call makes its 5 attempts (15). With 10 tokens, each failed attempt spending 1, retries
    # stop once 5 are left: 5 attempts for the first call, 1 for each after it. At most: gRPC keeps the tokens
    # per target for the whole process, and an earlier test's channel to a reused port may have spent some.
    assert len(failed) <= 7, failed
