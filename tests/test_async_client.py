"""AsyncTaskClient against a real server: the same calls, errors and token refresh, under asyncio."""

from __future__ import annotations

import asyncio
import secrets

import grpc
import pytest

from client import NotFound, Unauthenticated
from client.async_task_client import AsyncTaskClient
from server.app import TodoServer
from tests.support import mint_token


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The client does not care which database the server uses: SQLite keeps this module quick."""
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'todo.db'}"


def test_round_trip_and_pages(todo_server: TodoServer, secret: bytes) -> None:
    async def story() -> None:
        token = mint_token(secret, f"async{secrets.token_hex(6)}")
        async with AsyncTaskClient(f"127.0.0.1:{todo_server.port}", token=token) as tasks:
            created = [await tasks.create_task(f"task {n}", priority="low") for n in range(3)]
            done = await tasks.update_task(created[0].name, completed=True)
            assert done.completed
            titles = [t.title async for t in tasks.iter_tasks(page_size=2, order_by="title")]
            assert titles == ["task 0", "task 1", "task 2"]
            await tasks.delete_task(created[1].name)
            with pytest.raises(NotFound) as raised:
                await tasks.get_task(created[1].name)
            assert raised.value.code == grpc.StatusCode.NOT_FOUND
            assert raised.value.reason == "TASK_NOT_FOUND"

    asyncio.run(story())


def test_an_async_provider_is_asked_again_once_on_expiry(todo_server: TodoServer, secret: bytes) -> None:
    calls: list[int] = []

    async def provider() -> str:
        calls.append(1)
        return mint_token(secret, "alice", ttl=-600 if len(calls) == 1 else 600)

    async def story() -> None:
        async with AsyncTaskClient(f"127.0.0.1:{todo_server.port}", token_provider=provider) as tasks:
            await tasks.list_tasks()
        async with AsyncTaskClient(
            f"127.0.0.1:{todo_server.port}", token=mint_token(secret, "alice", ttl=-600)
        ) as tasks:
            with pytest.raises(Unauthenticated) as raised:
                await tasks.list_tasks()
            assert raised.value.reason == "TOKEN_EXPIRED"

    asyncio.run(story())
    assert len(calls) == 2


def test_one_async_client_acts_for_each_user_it_is_given(todo_server: TodoServer, secret: bytes) -> None:
    async def story() -> None:
        async with AsyncTaskClient(f"127.0.0.1:{todo_server.port}") as shared:
            users = [f"async{secrets.token_hex(6)}" for _ in range(2)]
            clients = [shared.with_token(mint_token(secret, user)) for user in users]
            for user, client in zip(users, clients, strict=True):
                await client.create_task(f"{user}'s")
            for user, client in zip(users, clients, strict=True):
                assert [t.title async for t in client.iter_tasks()] == [f"{user}'s"]
            await clients[0].close()  # leaves the shared channel open
            assert len((await clients[1].list_tasks()).tasks) == 1
            with pytest.raises(ValueError, match="with_token"):
                await shared.list_tasks()

    asyncio.run(story())
