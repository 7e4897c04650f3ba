"""Fault runs: short in `make test`, long in `make soak`, which also writes their table to docs/reliability.md."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import URL, Engine, create_engine, exc, make_url, text
from sqlalchemy.exc import ArgumentError

from tests.faults.report import FaultRow, write_report

SOAK = os.environ.get("TODO_SOAK") == "1"
_REPORT = os.environ.get("TODO_RELIABILITY_REPORT")


@pytest.fixture(scope="session")
def load_seconds() -> float:
    """How long load runs before and after each fault: a moment in `make test`, longer in `make soak`."""
    return 15.0 if SOAK else 0.5


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
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                {"name": self.name},
            )

    def restore_connections(self) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))


def _postgres_admin_url() -> URL:
    raw = os.environ.get("TODO_TEST_DATABASE_URL", "")
    if not raw.startswith("postgresql"):
        pytest.skip("PostgreSQL fault tests need TODO_TEST_DATABASE_URL=postgresql+psycopg://… (.ci/run sets it)")
    try:
        return make_url(raw)
    except ArgumentError as error:
        pytest.fail(f"TODO_TEST_DATABASE_URL is not a database URL: {error}")


@pytest.fixture
def scratch_database() -> Iterator[ScratchDatabase]:
    """A fresh PostgreSQL database, dropped afterwards; its connections are always restored first."""
    admin_url = _postgres_admin_url()
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        with admin.connect() as connection:
            name = f"todo_fault_{secrets.token_hex(6)}"
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except (ImportError, exc.OperationalError) as error:
        pytest.skip(f"no PostgreSQL to run fault tests on: {type(error).__name__}")
    scratch = ScratchDatabase(admin_url.set(database=name).render_as_string(hide_password=False), name, admin)
    try:
        yield scratch
    finally:
        scratch.restore_connections()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
