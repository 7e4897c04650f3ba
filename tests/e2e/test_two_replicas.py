"""Two todo-server processes on one PostgreSQL database serve the same user as one service."""

from __future__ import annotations

import secrets
from pathlib import Path

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from tests.e2e.conftest import start_server, stop_server
from tests.support import User, failure_of, mint_token

pytestmark = pytest.mark.e2e


def test_two_processes_on_one_postgresql_database_agree(tmp_path: Path, postgres_url: str) -> None:
    shared = {"BETTER_AUTH_SECRET": secrets.token_urlsafe(48), "DATABASE_URL": postgres_url}
    first = start_server(tmp_path, env=shared)
    second = start_server(tmp_path, env=shared)
    try:
        with grpc.insecure_channel(first.address) as a, grpc.insecure_channel(second.address) as b:
            user_id = f"carol{secrets.token_hex(6)}"
            token = mint_token(shared["BETTER_AUTH_SECRET"].encode(), user_id)
            on_a, on_b = (User(user_id, token, pb_grpc.TaskServiceStub(channel)) for channel in (a, b))

            created = [on_a.create_task(f"task {i}") for i in range(5)]
            assert on_b.get_task(created[0].name) == created[0]
            listed, token = [], ""
            for replica in (on_a, on_b, on_a):  # a page token from one replica works on the other
                page = replica.list_tasks(page_size=2, page_token=token)
                listed.extend(t.name for t in page.tasks)
                token = page.next_page_token
            assert token == ""
            assert listed == [t.name for t in reversed(created)]

            renamed = on_b.update_task(pb.Task(name=created[1].name, title="renamed on b", etag=created[1].etag))
            stale = failure_of(
                lambda: on_a.update_task(pb.Task(name=created[1].name, title="stale", etag=created[1].etag))
            )
            assert stale.code == grpc.StatusCode.ABORTED
            assert on_a.get_task(created[1].name) == renamed

            on_a.delete_task(created[2].name)
            assert failure_of(lambda: on_b.get_task(created[2].name)).code == grpc.StatusCode.NOT_FOUND
            assert on_b.list_tasks().total_size == on_a.list_tasks().total_size == 4
    finally:
        assert stop_server(first) == 0
        assert stop_server(second) == 0
