"""Migrations are the only source of the schema: they match the models, and the server refuses a schema behind
its code, or ahead of it unless the newer release says this one may run on it."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from server.app import build_server
from server.config import Secret, Settings
from server.db.connections import WRITE_OPTION
from server.db.models import Base
from server.db.schema import (
    SchemaAheadError,
    SchemaBehindError,
    current_revision,
    head_revision,
    known_revisions,
    migrate,
    migration_module,
    oldest_release,
)
from server.db.session import Database
from tests.e2e.conftest import BIN, run, start_server, stop_server


def _settings(url: str, *, migrate: bool) -> Settings:
    return Settings(
        listen="127.0.0.1:0",
        database_url=url,
        better_auth_secret=Secret(b"k" * 48),
        max_workers=2,
        migrate=migrate,
    )


def test_the_migrations_make_exactly_what_the_models_describe(fresh_database_url: str) -> None:
    database = Database(fresh_database_url, pool_size=1)
    try:
        database.migrate()
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == [], "models and migrations differ: write a migration (see README)"
        assert current_revision(database.engine) == head_revision()
    finally:
        database.dispose()


def test_the_server_refuses_an_empty_database_and_names_the_fix(fresh_database_url: str) -> None:
    with pytest.raises(SchemaBehindError, match=r"run `todo-server migrate` \(or start with --migrate\)"):
        build_server(_settings(fresh_database_url, migrate=False))


def test_the_server_refuses_a_schema_behind_its_code(fresh_database_url: str) -> None:
    database = Database(fresh_database_url, pool_size=1)
    previous = known_revisions()[-2]
    try:
        migrate(database.engine, write_option=WRITE_OPTION, target=previous)  # this release's migration not run
        behind = f"at revision {previous}, this server needs {head_revision()}"
        with pytest.raises(SchemaBehindError, match=behind):
            build_server(_settings(fresh_database_url, migrate=False))
    finally:
        database.dispose()


def test_migrating_twice_changes_nothing(fresh_database_url: str) -> None:
    database = Database(fresh_database_url, pool_size=1)
    try:
        database.migrate()
        database.migrate()
        assert current_revision(database.engine) == head_revision()
    finally:
        database.dispose()


def test_two_servers_migrating_at_once_take_turns(fresh_database_url: str) -> None:
    databases = [Database(fresh_database_url, pool_size=1) for _ in range(2)]
    barrier = threading.Barrier(2)

    def migrate(database: Database) -> None:
        barrier.wait(timeout=10)
        database.migrate()

    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(migrate, databases))  # re-raises either one's failure
        assert current_revision(databases[0].engine) == head_revision()
    finally:
        for database in databases:
            database.dispose()


@pytest.mark.e2e
def test_todo_server_without_migrate_exits_with_one_line_then_serves_after_migrate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {**os.environ, "BETTER_AUTH_SECRET": "s" * 48, "DATABASE_URL": url, "TODO_MIGRATE": "0"}
    refused = run(str(BIN / "todo-server"), "--listen", "127.0.0.1:0", env=env)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr  # one line, no traceback
    assert "run `todo-server migrate`" in refused.stderr

    migrated = run(str(BIN / "todo-server"), "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    server = start_server(tmp_path, env={"DATABASE_URL": url, "TODO_MIGRATE": "0"})
    assert stop_server(server) == 0


# A rolling deploy: the new release migrated the database (`todo-server migrate`) while replicas of the
# release before still run, and one of those restarts. Here this code plays that older release: the
# database is stamped with a revision it has never heard of, as a newer release's migration would leave it.
_NEWER_REVISION = "9999"


def _as_left_by_a_newer_release(database: Database, *, oldest_release: str) -> None:
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :newer"), {"newer": _NEWER_REVISION})
        connection.execute(text("UPDATE schema_compatibility SET oldest_release = :old"), {"old": oldest_release})


def test_migrating_records_the_oldest_release_that_runs_on_the_schema(fresh_database_url: str) -> None:
    database = Database(fresh_database_url, pool_size=1)
    try:
        database.migrate()
        assert oldest_release(database.engine) == migration_module(head_revision()).oldest_release
    finally:
        database.dispose()


def test_every_migration_names_an_oldest_release_at_or_before_itself() -> None:
    revisions = known_revisions()
    for revision in revisions:
        oldest = migration_module(revision).oldest_release
        assert oldest in revisions, f"migration {revision}: oldest_release {oldest!r} is no revision"
        assert revisions.index(oldest) <= revisions.index(revision), f"migration {revision} names a later one"


def test_a_server_runs_on_a_newer_releases_schema_that_says_it_may(
    fresh_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(fresh_database_url, pool_size=1)
    try:
        database.migrate()
        _as_left_by_a_newer_release(database, oldest_release=head_revision())
        with caplog.at_level("WARNING", logger="todo.db"):
            todo_server = build_server(_settings(fresh_database_url, migrate=True))  # --migrate: nothing to do
        todo_server.stop(None)
        assert current_revision(database.engine) == _NEWER_REVISION  # not touched
        assert f"revision {_NEWER_REVISION}, from a newer release" in caplog.text
    finally:
        database.dispose()


def test_a_server_refuses_a_newer_releases_schema_that_needs_a_newer_server(fresh_database_url: str) -> None:
    database = Database(fresh_database_url, pool_size=1)
    try:
        database.migrate()
        _as_left_by_a_newer_release(database, oldest_release="9998")
        for migrate in (False, True):
            with pytest.raises(SchemaAheadError, match="needs a server at revision 9998 or newer: deploy"):
                build_server(_settings(fresh_database_url, migrate=migrate))
        assert current_revision(database.engine) == _NEWER_REVISION
    finally:
        database.dispose()
