"""Walking every page of 10,000 tasks while others insert and delete: each survivor is seen exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import grpc
import pytest

from server.db.session import Database
from tests.seeding import seed_tasks
from tests.support import User

_TASKS = 10_000
_PAGE_SIZE = 200
_ORDERS = ("create_time", "due_time", "due_time desc", "title", "priority desc", "update_time desc")


@pytest.fixture(scope="module")
def walker(database_url: str, todo_server, make_user: Callable[[str], User]) -> tuple[User, set[str]]:  # type: ignore[no-untyped-def]
    """A user with 10,000 tasks, seeded in bulk (through the API it would take minutes)."""
    user = make_user("walker")
    database = Database(database_url, pool_size=1)
    try:
        ids = seed_tasks(database, user.user_id, _TASKS)
    finally:
        database.dispose()
    return user, ids


def _task_id(name: str) -> str:
    return name.rsplit("/", 1)[-1]


class Churn:
    """Creates and deletes the walker's tasks on another thread until stopped; records what it did."""

    def __init__(self, user: User, deletable: list[str]) -> None:
        self.user = user
        self.deletable = deletable
        self.deleted: set[str] = set()  # every delete sent, answered or not
        self.created: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Churn:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and self.deletable and time.monotonic() < deadline:
            task_id = self.deletable.pop()
            self.deleted.add(task_id)
            try:
                self.user.delete_task(f"users/{self.user.user_id}/tasks/{task_id}")
                self.created.add(_task_id(self.user.create_task("inserted mid-walk", priority=2).name))
            except grpc.RpcError:
                continue  # a delete that lost a race is fine; the walk's assertions cover the rest


@pytest.mark.parametrize("order_by", _ORDERS)
def test_a_walk_sees_every_surviving_task_exactly_once(walker: tuple[User, set[str]], order_by: str) -> None:
    user, seeded = walker
    present = {_task_id(t.name) for t in user.all_tasks(page_size=1000)}  # earlier walks churned too
    with Churn(user, deletable=sorted(present & seeded)[::7][:300]) as churn:
        seen = Counter(_task_id(t.name) for t in user.all_tasks(order_by=order_by, page_size=_PAGE_SIZE))
    assert churn.deleted, "the walk ended before any concurrent change happened"
    twice = [task_id for task_id, times in seen.items() if times > 1]
    assert twice == [], f"{len(twice)} tasks were on two pages"
    survivors = present - churn.deleted
    missing = survivors - seen.keys()
    assert not missing, f"{len(missing)} surviving tasks were skipped"
    strangers = seen.keys() - present - churn.created - churn.deleted
    assert not strangers, "the walk returned tasks that were never the walker's"
