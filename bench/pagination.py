"""Keyset pagination at depth: page 1 vs page 1,000 of 100,000 tasks, every order_by, SQLite and PostgreSQL.

Run with `make bench-pagination`; it rewrites docs/pagination-benchmark.md. Not a test: it reports ratios
measured in one run on one machine. The tasks go in with one bulk INSERT under the user's identity
(tests/seeding.py), so seeding takes seconds; every page is then fetched through the real gRPC server.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from sqlalchemy import text
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.app import run_server
from server.config import Secret, Settings
from server.db.session import Database
from tests.postgres import TEST_DATABASE_URL_VARIABLE, PostgresUnavailable, fresh_database
from tests.seeding import seed_tasks
from tests.support import User, mint_token

_ORDERS = tuple(f"{field}{suffix}" for field in ("create_time", "update_time", "due_time", "title", "priority")
                for suffix in ("", " desc"))  # fmt: skip
_GOAL = 1.3


@dataclass
class Row:
    database: str
    order_by: str
    first_ms: float
    deep_ms: float

    @property
    def ratio(self) -> float:
        return self.deep_ms / self.first_ms


def _token_before_page(user: User, order_by: str, page: int, page_size: int) -> str:
    """The page token that starts page `page`: walked in big pages (tokens don't bind the page size)."""
    skip, token = (page - 1) * page_size, ""
    while skip:
        response = user.list_tasks(order_by=order_by, page_size=min(1000, skip), page_token=token)
        skip -= len(response.tasks)
        token = response.next_page_token
    return token


def _page_ms(user: User, order_by: str, token: str, page_size: int) -> float:
    started = time.perf_counter()
    response = user.list_tasks(order_by=order_by, page_size=page_size, page_token=token)
    elapsed = (time.perf_counter() - started) * 1000
    assert len(response.tasks) == page_size
    return elapsed


def _first_and_deep_ms(user: User, order_by: str, deep_token: str, page_size: int, repeats: int) -> Row:
    """Medians of page 1 and the deep page, fetched in turn so both see the same machine load."""
    first, deep = [], []
    for _ in range(repeats):
        first.append(_page_ms(user, order_by, "", page_size))
        deep.append(_page_ms(user, order_by, deep_token, page_size))
    return Row("", order_by, statistics.median(first), statistics.median(deep))


def _count_ms(database: Database, owner_id: str, repeats: int) -> float:
    """What total_size costs: the COUNT(*) over the user's matching tasks that every ListTasks runs."""
    timings = []
    with database.engine.connect() as connection:
        for _ in range(repeats):
            started = time.perf_counter()
            connection.execute(text("SELECT count(*) FROM tasks WHERE owner_id = :o"), {"o": owner_id}).scalar()
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


@contextmanager
def _databases(only: str | None) -> Iterator[list[tuple[str, str]]]:
    with tempfile.TemporaryDirectory() as directory:
        found = [] if only == "postgresql" else [("SQLite", f"sqlite:///{Path(directory) / 'bench.db'}")]
        if only == "sqlite":
            yield found
            return
        try:
            with fresh_database(os.environ.get(TEST_DATABASE_URL_VARIABLE)) as url:
                yield [*found, ("PostgreSQL", url)]
        except PostgresUnavailable as reason:
            print(f"PostgreSQL skipped: {reason}")
            yield found


def measure(name: str, url: str, *, tasks: int, page: int, page_size: int, repeats: int) -> tuple[list[Row], str]:
    secret = secrets.token_urlsafe(48).encode()
    settings = Settings(
        listen="127.0.0.1:0", database_url=url, better_auth_secret=Secret(secret), max_workers=4, migrate=True
    )
    with run_server(settings) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        user_id = f"bench{secrets.token_hex(4)}"
        started = time.perf_counter()
        seed_tasks(server.database, user_id, tasks)
        seeded = f"{name}: seeded {tasks:,} tasks in {time.perf_counter() - started:.1f} s"
        with server.database.engine.begin() as connection:  # fresh statistics, as autovacuum would soon give
            connection.execute(text("ANALYZE"))
        user = User(user_id, mint_token(secret, user_id), pb_grpc.TaskServiceStub(channel))
        rows = []
        for order_by in _ORDERS:
            deep_token = _token_before_page(user, order_by, page, page_size)
            _first_and_deep_ms(user, order_by, deep_token, page_size, 2)  # warm the caches
            row = _first_and_deep_ms(user, order_by, deep_token, page_size, repeats)
            row.database = name
            rows.append(row)
            print(f"{name:10} {order_by:18} {rows[-1].first_ms:7.2f} ms {rows[-1].deep_ms:7.2f} ms "
                  f"{rows[-1].ratio:5.2f}")  # fmt: skip
        count_ms = _count_ms(server.database, user_id, repeats)
        return rows, f"{seeded}; COUNT(*) over them (what total_size costs) takes {count_ms:.2f} ms"


def report(rows: list[Row], notes: list[str], *, tasks: int, page: int, page_size: int) -> str:
    worst = max((row.ratio for row in rows), default=0.0)
    lines = [
        "# Pagination benchmark: the deep page costs what the first does",
        "",
        f"Generated by `make bench-pagination` (bench/pagination.py) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.1f} (other work shared the machine).",
        "",
        f"One user with {tasks:,} tasks; ListTasks through the real gRPC server (127.0.0.1, one channel), "
        f"page_size {page_size}: page 1 against page {page:,} (reached with a page token), median of the repeats. "
        f"Goal: deep / first <= {_GOAL}. Worst ratio this run: **{worst:.2f}** "
        f"({'met' if worst <= _GOAL else 'NOT met'}).",
        "",
        "| database | order_by | page 1 (ms) | page 1,000 (ms) | deep / first |",
        "| --- | --- | ---: | ---: | ---: |",
        *(f"| {r.database} | `{r.order_by}` | {r.first_ms:.2f} | {r.deep_ms:.2f} | {r.ratio:.2f} |" for r in rows),
        "",
        *(f"- {note}" for note in notes),
        "",
        "Both pages include the COUNT(*) behind `total_size` (see the README): it is the part of a ListTasks "
        "that grows with the user's task count, and it grows the same for every page. Ordered by `due_time`, "
        "a page that straddles the tasks with and without a due date runs two range scans instead of one "
        "(70% of the seeded tasks have none, so neither page 1 nor page 1,000 straddles it here).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--output", default="docs/pagination-benchmark.md")
    args = parser.parse_args()
    rows: list[Row] = []
    notes: list[str] = []
    with _databases(args.only) as databases:
        for name, url in databases:
            measured, note = measure(
                name, url, tasks=args.tasks, page=args.page, page_size=args.page_size, repeats=args.repeats
            )
            rows.extend(measured)
            notes.append(note)
    text_report = report(rows, notes, tasks=args.tasks, page=args.page, page_size=args.page_size)
    Path(args.output).write_text(text_report)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
