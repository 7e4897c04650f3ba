"""SQLite as the server opens it: WAL (reads go on while someone writes), foreign keys on, FULL sync, and a
busy timeout (a write waits its turn instead of failing at once)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from server.app import TodoServer
from server.config import Settings
from tests.support import User


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'todo.db'}"


@contextmanager
def write_lock_held_elsewhere(settings: Settings) -> Iterator[sqlite3.Connection]:
    """Another process's write transaction on the server's file (EXCLUSIVE: in WAL, readers still read)."""
    path = settings.database_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # a timer may commit it
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        yield blocker
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()


def test_server_connections_use_wal_foreign_keys_and_full_sync(todo_server: TodoServer) -> None:
    with todo_server.database.engine.connect() as connection:
        pragma = connection.connection.driver_connection.execute
        assert pragma("PRAGMA journal_mode").fetchone() == ("wal",)
        assert pragma("PRAGMA foreign_keys").fetchone() == (1,)
        assert pragma("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_reads_are_served_while_another_writer_holds_the_lock(alice: User, settings: Settings) -> None:
    task = alice.create_task("readable during a write")
    with write_lock_held_elsewhere(settings):
        assert alice.get_task(task.name) == task  # with a rollback journal this would wait, then fail
        assert alice.list_tasks().total_size == 1


def test_a_write_waits_for_a_lock_held_briefly_instead_of_failing(alice: User, settings: Settings) -> None:
    with write_lock_held_elsewhere(settings) as blocker:
        release = threading.Timer(0.5, lambda: blocker.execute("COMMIT"))
        release.start()
        try:
            assert alice.create_task("after the wait").title == "after the wait"  # busy_timeout: waited
        finally:
            release.join()
