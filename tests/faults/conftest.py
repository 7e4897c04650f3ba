"""Fault runs: short in `make test`, long in `make soak`, which also writes their table to docs/reliability.md."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from server.app import TodoServer, run_server
from server.config import Secret, Settings
from tests.faults.report import FaultRow, write_report
from tests.postgres import TEST_DATABASE_URL_VARIABLE, PostgresUnavailable, fresh_database, skip_or_fail

SOAK = os.environ.get("TODO_SOAK") == "1"
_REPORT = os.environ.get("TODO_RELIABILITY_REPORT")


@pytest.fixture(scope="session")
def load_seconds() -> float:
    """How long load runs before and after each fault: a moment in `make test`, longer in `make soak`."""
    return 10.0 if SOAK else 0.5


@pytest.fixture(scope="session")
def fault_report() -> Iterator[list[FaultRow]]:
    rows: list[FaultRow] = []
    yield rows
    if _REPORT and rows:
        write_report(Path(_REPORT), sorted(rows, key=lambda row: row.fault), command="make soak")


@dataclass(frozen=True)
class ScratchDatabase:
    """A PostgreSQL database of our own, so cutting its connections disturbs no one else's tests."""

    url: str
    name: str
    admin: Engine

    def cut_connections(self) -> None:
        """Refuses new connections to this database and ends the open ones (only this database's)."""
        with self.admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false'))
        self.end_sessions()

    def end_sessions(self) -> None:
        """Ends every open session on this database (only this database's), as a failover does."""
        with self.admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                {"name": self.name},
            )

    def restore_connections(self) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))


@pytest.fixture
def scratch_database() -> Iterator[ScratchDatabase]:
    """A fresh PostgreSQL database of this test's own, dropped afterwards; its connections always restored."""
    base_url = os.environ.get(TEST_DATABASE_URL_VARIABLE)
    try:
        with fresh_database(base_url) as url:
            admin = create_engine(base_url or "", isolation_level="AUTOCOMMIT", pool_pre_ping=True)
            scratch = ScratchDatabase(url, make_url(url).database or "", admin)
            try:
                yield scratch
            finally:
                scratch.restore_connections()
                admin.dispose()
    except PostgresUnavailable as reason:
        skip_or_fail(reason)


@contextlib.contextmanager
def fault_server(database_url: str, secret: bytes) -> Iterator[TodoServer]:
    """todo-server in this process on `database_url` (migrated, 4 workers), stopped when the block ends."""
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        better_auth_secret=Secret(secret),
        max_workers=4,
        migrate=True,
    )
    with run_server(settings) as server:
        yield server


@pytest.fixture
def server_on_scratch(scratch_database: ScratchDatabase, secret: bytes) -> Iterator[TodoServer]:
    """fault_server on this test's scratch database."""
    with fault_server(scratch_database.url, secret) as server:
        yield server


@pytest.fixture
def attempts(caplog: pytest.LogCaptureFixture) -> Callable[[str], list[str]]:
    """The status of each attempt the server answered for `method`, in order, from its access log."""
    caplog.set_level(logging.INFO, logger="todo.access")

    def of(method: str) -> list[str]:
        lines = [r.getMessage() for r in caplog.records if r.name == "todo.access"]
        prefix = f"rpc method=/todo.v1.TaskService/{method} code="
        return [line.removeprefix(prefix).split()[0] for line in lines if line.startswith(prefix)]

    return of
