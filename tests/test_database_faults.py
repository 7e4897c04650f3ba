"""A database that cannot serve a call gives UNAVAILABLE with a safe message, and loses nothing."""

from __future__ import annotations

import sqlite3

import grpc
import pytest

from server.config import Settings
from tests.support import User, failure_of

pytestmark = pytest.mark.sqlite_only


def test_locked_database_is_unavailable_and_the_write_is_not_kept(alice: User, settings: Settings) -> None:
    path = settings.database_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # holds the write lock past the server's busy timeout
    try:
        failure = failure_of(lambda: alice.create_task("while locked"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    for leak in ("SELECT", "INSERT", "sqlite", "Traceback", "locked"):
        assert leak not in failure.message
    assert alice.list_tasks().total_size == 0
    assert alice.create_task("after the lock").title == "after the lock"
