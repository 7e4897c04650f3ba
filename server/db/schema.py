"""The schema is made and changed only by the Alembic migrations in server/db/migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

_MIGRATIONS = Path(__file__).parent / "migrations"
# Held while migrating on PostgreSQL, so replicas started together with --migrate take turns.
_POSTGRES_MIGRATION_LOCK = 7_202_611


class SchemaBehindError(RuntimeError):
    """The database's schema is older than this server's code; the message says how to fix it."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, running its commands on `connection` (migrations/env.py)."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "server/db/migrations has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine, *, write_option: str, target: str = "head") -> None:
    """Brings the schema up to this code's head revision, or `target` (a no-op when it is there).

    Two servers started together with --migrate take turns: the second waits for the first's lock
    (PostgreSQL advisory lock; SQLite BEGIN IMMEDIATE via `write_option`) and then finds nothing to do.
    """
    with engine.connect().execution_options(**{write_option: True}) as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_MIGRATION_LOCK})
        command.upgrade(alembic_config(connection), target)


def require_current(engine: Engine) -> None:
    """Raises SchemaBehindError unless the database is at this code's head revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaBehindError(
            f"the database schema is at revision {current or 'none (empty database)'}, this server needs "
            f"{head}: run `todo-server migrate` (or start with --migrate) against the same DATABASE_URL"
        )
