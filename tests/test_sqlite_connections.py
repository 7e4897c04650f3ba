"""SQLite as the server opens it: WAL (reads go on while someone writes), foreign keys on, FULL sync, and a
busy timeout (a write waits its turn instead of failing at once)."""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from server.app import TodoServer
from server.call_deadline import set_call_deadline
from server.config import Settings
from server.db.connections import SQLITE_BUSY_TIMEOUT_MS
from server.db.models import Task
from server.db.repository import TaskRepository
from server.db.session import Database
from server.identity import Identity, set_identity
from server.tasks import TaskFields
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


def test_each_call_gets_a_busy_timeout_bounded_by_its_own_deadline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The timeout is kept on the pooled connection between calls, and set again only when a call needs another:
    a short deadline must never outlive its call, nor a long one be cut by the call before."""
    database = Database(f"sqlite:///{tmp_path / 'todo.db'}", pool_size=1)  # every call gets the same connection
    database.migrate()

    def busy_timeout_ms() -> int:
        with database.engine.connect() as connection:
            return connection.connection.driver_connection.execute("PRAGMA busy_timeout").fetchone()[0]

    def call(deadline_seconds: float | None, work) -> int:  # type: ignore[no-untyped-def]
        def run() -> int:
            set_identity(Identity(user_id="alice"))
            if deadline_seconds is not None:
                set_call_deadline(deadline_seconds)
            work()
            return busy_timeout_ms()

        return contextvars.Context().run(run)

    def read() -> None:
        database.fetch_owned(select(Task.id), {})

    def write() -> None:
        TaskRepository(database).create(fields=TaskFields(title="x"))

    def in_bounds(deadline_seconds: float | None, busy_ms: int) -> bool:
        if deadline_seconds is None:
            return busy_ms == SQLITE_BUSY_TIMEOUT_MS
        return deadline_seconds * 1000 - 500 < busy_ms <= deadline_seconds * 1000

    try:
        assert busy_timeout_ms() == SQLITE_BUSY_TIMEOUT_MS
        # Every kind of call after every other, each with a deadline after none and none after one.
        for before, after in itertools.product((read, write), repeat=2):
            for first, then in ((None, 1.0), (1.0, None), (3.0, 1.0), (1.0, 3.0)):
                assert in_bounds(first, call(first, before))
                assert in_bounds(then, call(then, after)), (before.__name__, first, after.__name__, then)
    finally:
        database.dispose()


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most accounts have (files 0644): under 077 a file is private without our help."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("usual_umask")
def test_a_new_database_file_and_its_wal_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    # The tasks of every user are in it: the umask's usual 0644 would let any local account read them all.
    database = Database(f"sqlite:///{tmp_path / 'todo.db'}", pool_size=1)
    try:
        database.migrate()
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    finally:
        database.dispose()
    assert {"todo.db", "todo.db-wal", "todo.db-shm"} <= modes.keys()
    assert modes == dict.fromkeys(modes, 0o600)


@pytest.mark.parametrize("make", ["readable by others", "a symbolic link"])
def test_an_existing_database_file_others_can_read_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make: str
) -> None:
    path = tmp_path / "todo.db"
    if make == "a symbolic link":
        (tmp_path / "elsewhere.db").touch(mode=0o600)
        path.symlink_to(tmp_path / "elsewhere.db")
    else:
        path.touch(mode=0o644)
        path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="todo.db"):
        Database(f"sqlite:///{path}", pool_size=1).dispose()
    [warning] = [r.getMessage() for r in caplog.records if r.name == "todo.db"]
    assert f"chmod 600 {path}*" in warning
    assert ("mode 0644" if make == "readable by others" else "a symbolic link") in warning


def test_an_existing_private_database_file_gets_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "todo.db"
    path.touch(mode=0o600)
    with caplog.at_level(logging.WARNING, logger="todo.db"):
        Database(f"sqlite:///{path}", pool_size=1).dispose()
    assert not [r for r in caplog.records if r.name == "todo.db"]
