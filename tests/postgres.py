"""Throw-away PostgreSQL databases for tests and benchmarks: each run creates its own and drops it after."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest
from sqlalchemy import create_engine, exc, text
from sqlalchemy.engine import make_url

# The variable that names the server to create test databases on; `.ci/run` sets it.
TEST_DATABASE_URL_VARIABLE = "TODO_TEST_DATABASE_URL"
# Set to 1 (`.ci/run` does) to make a missing PostgreSQL fail the run instead of skipping its tests.
REQUIRE_POSTGRES_VARIABLE = "TODO_REQUIRE_POSTGRES"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL to test against; the message says why, for a skip reason."""


def skip_or_fail(reason: PostgresUnavailable) -> NoReturn:
    """Skips the test saying why there is no PostgreSQL; fails it instead where PostgreSQL is required (CI)."""
    if os.environ.get(REQUIRE_POSTGRES_VARIABLE) == "1":
        message = f"PostgreSQL is required ({REQUIRE_POSTGRES_VARIABLE}=1, as .ci/run sets), but {reason}"
        raise pytest.fail.Exception(message, pytrace=False) from None  # the message says it all
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


@contextmanager
def fresh_database(base_url: str | None) -> Iterator[str]:
    """The URL of a new, empty database on the server `base_url` points at; dropped when the block ends."""
    if not base_url:
        raise PostgresUnavailable(
            f"{TEST_DATABASE_URL_VARIABLE} is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test; "
            "`.ci/run` sets it)"
        )
    base = make_url(base_url)
    if base.get_backend_name() != "postgresql":
        raise PostgresUnavailable(f"{TEST_DATABASE_URL_VARIABLE} is not a postgresql URL")
    name = f"todo_test_{secrets.token_hex(6)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except exc.SQLAlchemyError as error:
        admin.dispose()
        host = f"{base.host}:{base.port or 5432}"
        raise PostgresUnavailable(
            f"PostgreSQL at {host} is unreachable ({type(error.orig or error).__name__})"
        ) from None
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
