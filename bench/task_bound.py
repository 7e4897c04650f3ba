"""What the per-user task bound costs a CreateTask, before and after task_counts (migration 0003), for one user
who keeps 10,000 tasks, on SQLite and PostgreSQL.

Run: .venv/bin/python -m bench.task_bound [TASKS] [ROUNDS] (PostgreSQL from TODO_TEST_DATABASE_URL, a scratch
database). Each round makes one create of each kind, in turn, so the machine's drift falls on all alike;
prints the median of each, in ms:
  before: the schema at 0002, the create as it was: SELECT count(*) of the caller's tasks, then INSERT
  after:  the schema at head, TaskRepository.create: INSERT (its trigger counts it), then one task_counts row
and, for each, the same INSERT without the bound (the trigger's share is after's minus before's).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from server.db import schema
from server.db.connections import WRITE_OPTION
from server.db.models import Task
from server.db.repository import TaskRepository, new_task_id
from server.db.session import Database
from server.identity import Identity, set_identity
from server.tasks import TaskFields
from tests.postgres import TEST_DATABASE_URL_VARIABLE, PostgresUnavailable, fresh_database
from tests.seeding import seed_tasks

_USER = "bench-user"
_BEFORE_THE_COUNTS = "0002"
_COUNT = select(func.count()).select_from(Task)  # the caller's: the session adds the owner


def _insert(database: Database, *, counted_first: bool) -> None:
    """A create as it was before 0003 (with `counted_first`: its bound), or the bare INSERT."""
    now = datetime.now(UTC)
    task = Task(
        id=new_task_id(), owner_id=_USER, title="measured", description="", completed=False, priority=0,
        create_time=now, update_time=now,
    )  # fmt: skip
    with database.transaction(write=True) as session:
        if counted_first:
            session.scalar(_COUNT)
        session.add(task)


@contextmanager
def _database(url: str, revision: str, tasks: int) -> Iterator[Database]:
    database = Database(url, pool_size=2)
    try:
        schema.migrate(database.engine, write_option=WRITE_OPTION, target=revision)
        seed_tasks(database, _USER, tasks)
        yield database
    finally:
        database.dispose()


def _ms(create: Callable[[], object]) -> float:
    started = time.perf_counter()
    create()
    return (time.perf_counter() - started) * 1000


def measure(name: str, before_url: str, after_url: str, *, tasks: int, rounds: int) -> None:
    with _database(before_url, _BEFORE_THE_COUNTS, tasks) as before, _database(after_url, "head", tasks) as after:
        bounded = TaskRepository(after, max_tasks_per_user=tasks + 2 * rounds + 10)
        unbounded = TaskRepository(after)
        kinds: dict[str, Callable[[], object]] = {
            "before, bound": lambda: _insert(before, counted_first=True),
            "before, no bound": lambda: _insert(before, counted_first=False),
            "after, bound": lambda: bounded.create(fields=TaskFields(title="measured")),
            "after, no bound": lambda: unbounded.create(fields=TaskFields(title="measured")),
        }
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for round_number in range(rounds + 5):
            for kind, create in kinds.items():
                elapsed = _ms(create)
                if round_number >= 5:  # the first few warm the caches and the statement cache
                    times[kind].append(elapsed)
    medians = "  ".join(f"{kind} {statistics.median(values):.2f}" for kind, values in times.items())
    print(f"{name:10} {tasks:,} tasks, median ms of {rounds}: {medians}")


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    set_identity(Identity(user_id=_USER))
    with tempfile.TemporaryDirectory() as directory:
        before, after = (f"sqlite:///{Path(directory) / name}" for name in ("before.db", "after.db"))
        measure("SQLite", before, after, tasks=tasks, rounds=rounds)
    server = os.environ.get(TEST_DATABASE_URL_VARIABLE)
    try:
        with fresh_database(server) as before, fresh_database(server) as after:
            measure("PostgreSQL", before, after, tasks=tasks, rounds=rounds)
    except PostgresUnavailable as reason:
        print(f"PostgreSQL skipped: {reason}")


if __name__ == "__main__":
    main()
