"""Answers the client never reads stay in the server's memory until their calls end: a bound on their bytes,
per user and in all, so that callers who do not read cannot make the server run out of memory.

One user may have 100 calls in flight, and a ListTasks page is up to 3 MiB: measured, 100 unread pages held
about 650 MB of the server, and ten accounts could hold every one of the 1000 calls in flight (6.5 GB).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from concurrent import futures

import grpc
import pytest
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import run_server
from server.config import Settings
from tests.support import User, failure_of, wait_until
from tests.unread_answers import UnreadAnswers, unread_answers

pytestmark = pytest.mark.sqlite_only  # the bound is the server's; the database does not matter

REFUSED = str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
TASKS = 20
DESCRIPTION = "x" * 4000  # a page of TASKS of these: about 80 KB


def _page_bytes() -> int:
    task = pb.Task(name="users/u/tasks/" + "0" * 32, title="a task", description=DESCRIPTION, etag="0" * 16)
    return TASKS * task.ByteSize()


def _with_long_tasks(user: User) -> User:
    for n in range(TASKS):
        user.create_task(f"task {n}", description=DESCRIPTION)
    return user


def _list_unread(connection: UnreadAnswers, user: User) -> str:
    return connection.call("/todo.v1.TaskService/ListTasks", pb.ListTasksRequest(parent="users/me"), user.token)


def _served(call: Callable[[], object]) -> bool:
    try:
        call()
    except grpc.RpcError:
        return False
    return True


def _on(channel: grpc.Channel, user: User) -> User:
    return User(user.user_id, user.token, pb_grpc.TaskServiceStub(channel))


def test_one_user_holds_at_most_their_share_of_unread_answers(
    settings: Settings, make_user: Callable[[str], User]
) -> None:
    page = _page_bytes()
    alice, bob = _with_long_tasks(make_user("alice")), _with_long_tasks(make_user("bob"))
    # Two pages fit under alice's bound, a third does not: the check is made before each call runs.
    bounded = dataclasses.replace(
        settings, max_unread_answer_bytes=100 * page, max_unread_answer_bytes_per_user=int(1.5 * page)
    )
    with run_server(bounded) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with unread_answers(server.port) as connection:
            outcomes = [_list_unread(connection, alice) for _ in range(4)]
            assert outcomes == ["answered", "answered", REFUSED, REFUSED]
            assert len(_on(channel, bob).list_tasks().tasks) == TASKS  # everyone else is served
            assert failure_of(lambda: _on(channel, alice).list_tasks()).reason == "ANSWER_BUFFER_EXHAUSTED"
        # Her connection closed, her calls ended: what they held is hers again.
        assert wait_until(lambda: _served(lambda: _on(channel, alice).list_tasks()))


def test_past_the_servers_bound_only_callers_who_read_their_answers_are_served(
    settings: Settings, make_user: Callable[[str], User]
) -> None:
    page = _page_bytes()
    alice, bob = _with_long_tasks(make_user("alice")), _with_long_tasks(make_user("bob"))
    bounded = dataclasses.replace(
        settings, max_unread_answer_bytes=int(3.5 * page), max_unread_answer_bytes_per_user=100 * page
    )
    with run_server(bounded) as server, unread_answers(server.port) as connection:
        list_alices = functools.partial(_list_unread, connection, alice)
        assert [list_alices() for _ in range(5)] == ["answered"] * 4 + [REFUSED]  # 4 pages held: over 3.5
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert len(_on(channel, bob).list_tasks().tasks) == TASKS  # bob reads his answers: served
        time.sleep(0.5)  # a call ends (and lets go of its answer's bytes) a moment after its client has it
        assert _list_unread(connection, bob) == "answered"  # his first unread one is let in...
        assert _list_unread(connection, bob) == REFUSED  # ...but not a second while the server is over


def test_empty_answers_ending_in_any_order_are_accounted_without_errors(
    alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    # A DeleteTask's answer is empty (0 bytes). Two such calls of one user that ended in the order they began
    # made the second call's release look for an entry the first had removed: a KeyError in grpcio's
    # callback, logged with its traceback.
    caplog.set_level(logging.ERROR)
    tasks = [alice.create_task(f"task {n}") for n in range(60)]
    with futures.ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda task: alice.delete_task(task.name), tasks))
    assert wait_until(lambda: len(alice.list_tasks().tasks) == 0)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
