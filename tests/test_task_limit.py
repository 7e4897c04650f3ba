"""One user may keep at most `--max-tasks-per-user` tasks: without a bound, one signed-in user (or a BFF bug
looping CreateTask) filled the disk at ~5 MB/s, 325 tasks of 17 KB a second, and made their own `query`
calls as slow as they liked."""

from __future__ import annotations

import uuid
from dataclasses import replace

import grpc
import pytest

from client import ResourceExhausted, TaskClient
from server.app import TodoServer
from server.config import Settings
from tests.support import User, failure_of

LIMIT = 3


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Settings:
    return replace(settings, max_tasks_per_user=LIMIT)


def test_a_user_at_the_limit_is_refused_and_others_are_not(alice: User, bob: User) -> None:
    for n in range(LIMIT):
        alice.create_task(f"task {n}")

    refused = failure_of(lambda: alice.create_task("one too many"))

    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.reason == "TASK_LIMIT_REACHED"
    assert f"{LIMIT} tasks" in refused.message
    assert alice.list_tasks().total_size == LIMIT  # nothing was added
    bob.create_task("bob's first")  # the bound is each user's own
    assert bob.list_tasks().total_size == 1


def test_deleting_a_task_makes_room_again(alice: User) -> None:
    tasks = [alice.create_task(f"task {n}") for n in range(LIMIT)]
    assert failure_of(lambda: alice.create_task("one too many")).code == grpc.StatusCode.RESOURCE_EXHAUSTED

    alice.delete_task(tasks[0].name)

    assert alice.create_task("now it fits").title == "now it fits"


def test_a_retried_create_at_the_limit_returns_its_task(alice: User) -> None:
    for n in range(LIMIT - 1):
        alice.create_task(f"task {n}")
    request_id = str(uuid.uuid4())
    first = alice.create_task("the last one", request_id=request_id)

    retried = alice.create_task("the last one", request_id=request_id)  # its reply was lost, say

    assert retried.name == first.name


def test_the_python_client_raises_resource_exhausted(todo_server: TodoServer, alice: User) -> None:
    with TaskClient(f"127.0.0.1:{todo_server.port}", token=alice.token) as client:
        for n in range(LIMIT):
            client.create_task(f"task {n}")
        with pytest.raises(ResourceExhausted) as raised:
            client.create_task("one too many")
    assert raised.value.reason == "TASK_LIMIT_REACHED"
