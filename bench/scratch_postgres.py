"""A throw-away PostgreSQL database for one run: created with a random name, dropped afterwards."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str | None]:
    """The SQLAlchemy URL of a new empty database on `server_url`, or None if it is not reachable."""
    admin_url = make_url(server_url).set(drivername="postgresql+psycopg", database="postgres")
    name = f"todo_bench_{secrets.token_hex(6)}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except (SQLAlchemyError, ModuleNotFoundError):
        yield None
        return
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
