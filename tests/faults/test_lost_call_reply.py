"""The channel's retry policy (client/channel.py) when a call's reply is lost: the server did the write, the
connection broke before the client heard, and the client sees UNAVAILABLE. gRPC retries such a call (it was
never committed: no response headers came back), so only a write that is safe to send twice may be retried
by the channel: a deleted task would be NOT_FOUND, an update ABORTED by its own change."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator

import pytest

from client import AsyncTaskClient, TaskClient, Unavailable
from server.app import TodoServer
from tests.faults.lost_call_reply import LostCallReply
from tests.support import mint_token


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the channel retries does not depend on the database: SQLite keeps this module quick."""
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'todo.db'}"


@pytest.fixture
def proxy(todo_server: TodoServer) -> Iterator[LostCallReply]:
    lost = LostCallReply(todo_server.port)
    yield lost
    lost.close()


@pytest.fixture
def client(proxy: LostCallReply, secret: bytes) -> Iterator[TaskClient]:
    token = mint_token(secret, f"retrier{secrets.token_hex(4)}")
    with TaskClient(f"127.0.0.1:{proxy.port}", token=token, default_timeout=20) as opened:
        yield opened


def test_a_delete_whose_reply_is_lost_is_not_sent_again(
    proxy: LostCallReply, client: TaskClient, attempts: Callable[[str], list[str]]
) -> None:
    task = client.create_task("deleted once")
    proxy.arm()
    with pytest.raises(Unavailable) as raised:
        client.delete_task(task.name)  # sent again, it would be NOT_FOUND: the first attempt deleted it
    assert proxy.reply_lost.is_set()
    assert raised.value.reason is None  # not the server's word that nothing was written
    assert attempts("DeleteTask") == ["OK"]
    assert list(client.iter_tasks()) == []


def test_an_update_whose_reply_is_lost_is_not_sent_again(
    proxy: LostCallReply, client: TaskClient, attempts: Callable[[str], list[str]]
) -> None:
    task = client.create_task("draft")
    proxy.arm()
    with pytest.raises(Unavailable):
        client.update_task(task.name, title="final", etag=task.etag)  # again: ABORTED by its own change
    assert proxy.reply_lost.is_set()
    assert attempts("UpdateTask") == ["OK"]
    assert client.get_task(task.name).title == "final"


def test_a_create_whose_reply_is_lost_is_sent_again_and_stored_once(
    proxy: LostCallReply, client: TaskClient, attempts: Callable[[str], list[str]]
) -> None:
    """CreateTask stays retried: the client's request_id makes the retry return the first task."""
    client.list_tasks()  # connected before the proxy is armed
    proxy.arm()
    created = client.create_task("pay rent")
    assert proxy.reply_lost.is_set()
    assert attempts("CreateTask") == ["OK", "OK"]
    assert [task.name for task in client.iter_tasks()] == [created.name]


def test_the_async_client_does_not_send_a_delete_whose_reply_is_lost_again(
    proxy: LostCallReply, secret: bytes, attempts: Callable[[str], list[str]]
) -> None:
    async def delete_with_the_reply_lost() -> Unavailable:
        token = mint_token(secret, f"retrier{secrets.token_hex(4)}")
        async with AsyncTaskClient(f"127.0.0.1:{proxy.port}", token=token, default_timeout=20) as tasks:
            task = await tasks.create_task("deleted once")
            proxy.arm()
            with pytest.raises(Unavailable) as raised:
                await tasks.delete_task(task.name)
            return raised.value

    assert asyncio.run(delete_with_the_reply_lost()).reason is None
    assert proxy.reply_lost.is_set()
    assert attempts("DeleteTask") == ["OK"]
