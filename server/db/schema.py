"""The schema is made and changed only by the Alembic migrations in server/db/migrations.

A server runs on the schema its code was written for, or on a newer release's schema when that release
says this one may (its migrations' `oldest_release`, stored in schema_compatibility): during a rolling
deploy the new release migrates first, and a replica of the old one that restarts meanwhile must still serve.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from server.db.models import SchemaCompatibility

_MIGRATIONS = Path(__file__).parent / "migrations"
# Held while migrating on PostgreSQL, so replicas started together with --migrate take turns.
_POSTGRES_MIGRATION_LOCK = 7_202_611


_log = logging.getLogger("todo.db")


class SchemaError(RuntimeError):
    """The server cannot run on the database's schema; the message says how to fix it."""


class SchemaBehindError(SchemaError):
    """The database's schema is older than this server's code: migrate it."""


class SchemaAheadError(SchemaError):
    """A newer release migrated the database past what this server's code can run on: deploy that release."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, running its commands on `connection` (migrations/env.py)."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None, "server/db/migrations has no revisions"
    return head


def known_revisions() -> list[str]:
    """This code's migrations, oldest first."""
    return [script.revision for script in reversed(list(_scripts().walk_revisions()))]


def migration_module(revision: str) -> ModuleType:
    """The migration file of `revision` (one of `known_revisions()`), as a module."""
    return _scripts().get_revision(revision).module


def oldest_release(engine: Engine) -> str | None:
    """The oldest release the database's schema says can run on it; None before migration 0004."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(SchemaCompatibility.__tablename__):
            return None
        return connection.execute(text("SELECT oldest_release FROM schema_compatibility")).scalar()


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
        current = MigrationContext.configure(connection).get_current_revision()
        if current is not None and current not in known_revisions():
            # A newer release migrated it: nothing here to run. require_current says whether this code may serve.
            return
        command.upgrade(alembic_config(connection), target)
        _record_oldest_release(connection)


def _record_oldest_release(connection: Connection) -> None:
    """Stores the oldest release that runs on the schema just migrated to (from migration 0004 on)."""
    if not inspect(connection).has_table(SchemaCompatibility.__tablename__):
        return
    revision = MigrationContext.configure(connection).get_current_revision()
    assert revision is not None
    connection.execute(text("DELETE FROM schema_compatibility"))
    connection.execute(
        text("INSERT INTO schema_compatibility (oldest_release) VALUES (:oldest)"),
        {"oldest": migration_module(revision).oldest_release},
    )


def require_current(engine: Engine) -> None:
    """Returns if this code can run on the database's schema: its own head revision, or a newer release's
    that names this one or an older as the oldest that can (logged as a warning). Raises SchemaBehindError
    for a schema behind the code, SchemaAheadError for one ahead that needs a newer server."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if current is None or current in known_revisions():
        raise SchemaBehindError(
            f"the database schema is at revision {current or 'none (empty database)'}, this server needs "
            f"{head}: run `todo-server migrate` (or start with --migrate) against the same DATABASE_URL"
        )
    oldest = oldest_release(engine)
    if oldest is not None and oldest in known_revisions():
        _log.warning(
            "the database schema is at revision %s, from a newer release than this server's %s; that release "
            "says servers at revision %s or newer run on it: serving (deploy the newer release soon)",
            current, head, oldest,
        )  # fmt: skip
        return
    needs = f", which needs a server at revision {oldest} or newer" if oldest is not None else ""
    raise SchemaAheadError(
        f"the database schema is at revision {current}, from a newer release than this server's {head}{needs}: "
        "deploy that release (or point DATABASE_URL at this release's database)"
    )
