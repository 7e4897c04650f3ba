"""Each database's connections as the server runs them: pool settings, what every connection and transaction
is set up with, how a call's deadline bounds each wait, and how a read block begins (Database.owned_reads).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from sqlalchemy import Engine, QueuePool, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.util import queue as pool_queue

from server.call_deadline import draining_first, remaining_seconds
from server.errors import DeadlineExceeded, TodoError, Unavailable

_log = logging.getLogger("todo.db")

WRITE_OPTION = "todo_write"
_BUSY_TIMEOUT_KEY = "todo_busy_timeout_ms"  # in a pooled connection's info: its busy_timeout now
SQLITE_BUSY_TIMEOUT_MS = 5000
# The longest a statement may run on PostgreSQL when the call has no deadline.
POSTGRES_STATEMENT_TIMEOUT_MS = 30_000
# Connections older than this are replaced before idle-killing proxies and firewalls cut them.
POSTGRES_POOL_RECYCLE_SECONDS = 1800
# A database host that does not answer fails the call (UNAVAILABLE) instead of hanging its thread: after this
# long, or when the call's deadline passes if that is sooner.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5


class CallExpired(DeadlineExceeded):
    """The caller's deadline passed: whatever this transaction did is rolled back, nothing is kept."""

    def __init__(self) -> None:
        super().__init__("the call's deadline passed before the database answered; nothing was written")


SERVER_SHUTTING_DOWN = "SERVER_SHUTTING_DOWN"


class ShuttingDown(Unavailable):
    """The server's drain ended before the call was done with the database: rolled back, nothing kept. The
    caller retries on another replica (UNAVAILABLE), where the write is done once."""

    reason = SERVER_SHUTTING_DOWN

    def __init__(self) -> None:
        super().__init__("the server is shutting down; nothing was written; retry (another replica answers)")


def _expired() -> TodoError:
    """What a call past `remaining_seconds()` is told: its deadline passed, or the server's drain ended."""
    return ShuttingDown() if draining_first() else CallExpired()


def _wait_ms(longest_ms: int) -> int:
    """How long the database may make this call wait: `longest_ms`, or less if the call's deadline is sooner."""
    remaining = remaining_seconds()
    if remaining is None:
        return longest_ms
    if remaining <= 0:
        raise _expired()
    return max(1, min(longest_ms, int(remaining * 1000)))


def refuse_if_expired() -> None:
    """Raises CallExpired once the running call's deadline has passed, ShuttingDown once the drain has ended."""
    remaining = remaining_seconds()
    if remaining is not None and remaining <= 0:
        raise _expired()


class _CallBoundedQueue(pool_queue.Queue[Any]):
    """The pool's idle connections. A call waits for one until the pool's timeout or its own deadline (or
    the drain's end), whichever is sooner: past that it fails as `_expired()` says, having taken nothing,
    instead of holding its thread and its turn for a caller who has gone."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        remaining = remaining_seconds()
        if not block or remaining is None or (timeout is not None and timeout <= remaining):
            return super().get(block, timeout)
        if remaining <= 0:
            raise _expired()
        try:
            return super().get(block, remaining)
        except pool_queue.Empty:
            raise _expired() from None


class CallBoundedQueuePool(QueuePool):
    """SQLAlchemy's QueuePool, whose checkout wait also ends at the running call's deadline."""

    _queue_class = _CallBoundedQueue
    # Logs as QueuePool does, under the `sqlalchemy` logger (WARNING unless asked): not its INFO on stderr.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.QueuePool"


class ReadBlock(NamedTuple):
    """How one OwnedReads block sends its statements, and what undoes its settings before the connection
    goes back to the pool (None: nothing to undo)."""

    cursor: Any
    send: Callable[[str, Any], list[Any]]  # (sql, driver arguments) -> rows
    undo: Callable[[], None] | None = None


# How a read block begins on each database: (driver connection, pooled connection's info, snapshot).
BeginRead = Callable[[Any, dict[str, Any], bool], ReadBlock]


def create_engine_for(url: str, *, pool_size: int) -> Engine:
    """An engine for `url` whose pool holds `pool_size` connections and never more."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
            _create_private_file(Path(parsed.database))
        # No pre-ping: a file has no server to lose, and a SELECT 1 per checkout was ~5% of a GetTask.
        options: dict[str, Any] = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": 10}
    else:
        # Sized for grpcio's thread pool (README "Database and migrations"): one connection per RPC
        # thread, never more (max_overflow 0), so replicas x workers stays under max_connections.
        options = {
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_timeout": 5,  # every RPC thread has its connection; waiting longer means a leak
            "pool_recycle": POSTGRES_POOL_RECYCLE_SECONDS,
            "connect_args": {
                "connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS,
                "options": f"-c statement_timeout={POSTGRES_STATEMENT_TIMEOUT_MS}",
            },
        }
    return create_engine(url, poolclass=CallBoundedQueuePool, **options)


def _create_private_file(path: Path) -> None:
    """Creates the SQLite file readable by its owner only: it holds every user's tasks. SQLite gives the -wal
    and -shm files it makes beside it the same mode. A file that exists is kept, with a warning if another
    account can read it or owns it (made by an older release, or planted in a shared directory)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
        return
    except FileExistsError:
        pass
    except OSError:  # cannot be made here (no such directory, say): SQLite opens it or says why not
        return
    with contextlib.suppress(OSError):
        found = path.lstat()
        if stat.S_ISLNK(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o077:
            _log.warning(
                "the SQLite file %s is %s: other accounts may read every user's tasks; "
                "make it a file of this account's with mode 0600 (chmod 600 %s*)",
                path, _describe(found), path,
            )  # fmt: skip


def _describe(found: os.stat_result) -> str:
    if stat.S_ISLNK(found.st_mode):
        return "a symbolic link"
    if found.st_uid != os.geteuid():
        return f"owned by uid {found.st_uid}, not this process's {os.geteuid()}"
    return f"mode {stat.S_IMODE(found.st_mode):04o}"


def configure(engine: Engine) -> BeginRead:
    """Sets up `engine`'s connections and transactions for its database; returns how a read block begins."""
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
        return _begin_sqlite_read
    if engine.dialect.name == "postgresql":
        _configure_postgresql(engine)
        return _begin_postgresql_read
    return _begin_plain_read


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    # Two connections switching a new file to WAL at once would deadlock, so SQLite fails one at once
    # ("database is locked", no busy handler): it tries again, within the busy timeout, once the other is done.
    # Any other failure (a read-only or missing file) is raised at once: that connection must not be kept.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # We emit BEGIN ourselves (below), so that writes can take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL, not WAL's usual NORMAL: a commit we acknowledged must survive a power cut too.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        record.info[_BUSY_TIMEOUT_KEY] = SQLITE_BUSY_TIMEOUT_MS
        cursor.close()
        # ilike() is lower(column) LIKE lower(pattern) here, and SQLite's lower() folds only A-Z: "ärger"
        # did not find "Ärger". Python's str.lower folds every script, as PostgreSQL's lower() does.
        dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # BEGIN IMMEDIATE for writes: a deferred transaction that reads and then writes can fail with
        # SQLITE_BUSY at its first write instead of waiting its turn.
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        # Straight to the driver: these two run on every call, and SQLAlchemy's statement path would cost
        # them more than the query itself.
        driver = connection.connection.driver_connection
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        try:
            _bound_sqlite_lock_wait(driver.execute, connection.info)
            driver.execute(begin)
        except sqlite3.OperationalError as error:  # "database is locked": what SQLAlchemy would have raised
            raise exc.OperationalError(begin, None, error) from None


def _bound_sqlite_lock_wait(execute: Callable[[str], Any], info: dict[str, Any]) -> None:
    """Waiting for another writer's lock ends at the call's deadline: no connection outlives its call."""
    wait_ms = _wait_ms(SQLITE_BUSY_TIMEOUT_MS)
    if info.get(_BUSY_TIMEOUT_KEY) != wait_ms:  # a call without a deadline rarely changes it
        execute(f"PRAGMA busy_timeout={wait_ms}")
        info[_BUSY_TIMEOUT_KEY] = wait_ms


def _sender(cursor: Any) -> Callable[[str, Any], list[Any]]:
    def send(sql: str, arguments: Any) -> list[Any]:
        cursor.execute(sql, arguments)
        return cursor.fetchall()

    return send


def _begin_plain_read(driver: Any, _info: dict[str, Any], _snapshot: bool) -> ReadBlock:
    cursor = driver.cursor()
    return ReadBlock(cursor, _sender(cursor))


def _begin_sqlite_read(driver: Any, info: dict[str, Any], snapshot: bool) -> ReadBlock:
    cursor = driver.cursor()
    _bound_sqlite_lock_wait(cursor.execute, info)
    if snapshot:
        cursor.execute("BEGIN")  # else each statement is its own transaction
    return ReadBlock(cursor, _sender(cursor))


def _begin_postgresql_read(driver: Any, _info: dict[str, Any], snapshot: bool) -> ReadBlock:
    if snapshot:
        undo = _begin_snapshot(driver)
        cursor = driver.cursor()
        _bound_postgresql_statements(cursor.execute)
        return ReadBlock(cursor, _sender(cursor), undo)
    # Each statement alone, in autocommit: one round trip where BEGIN, the statement and the pool's
    # ROLLBACK took three.
    driver.autocommit = True
    undo = functools.partial(setattr, driver, "autocommit", False)  # the next user of the connection may write
    if remaining_seconds() is None:
        cursor = driver.cursor()
        return ReadBlock(cursor, _sender(cursor), undo)
    # Bounded by the call's deadline: SET LOCAL and the statement go in one query string, which PostgreSQL
    # runs as one implicit transaction, so the setting ends with the statement. One round trip where BEGIN,
    # SET LOCAL, the statement and ROLLBACK took four (a psycopg pipeline measured slower than those four).
    # A string of several statements cannot have server-side parameters: psycopg's ClientCursor quotes each
    # value into it, as psycopg2 did for every query.
    cursor = psycopg.ClientCursor(driver)

    def send_bounded(sql: str, arguments: Any) -> list[Any]:
        bound = f"SET LOCAL statement_timeout = {_wait_ms(POSTGRES_STATEMENT_TIMEOUT_MS)}; {sql}"
        cursor.execute(bound, arguments)
        cursor.nextset()  # past the SET's empty result, to the statement's rows
        return cursor.fetchall()

    return ReadBlock(cursor, send_bounded, undo)


def _begin_snapshot(driver: psycopg.Connection[Any]) -> Callable[[], None]:
    """Makes the BEGIN that psycopg sends before the first statement take one snapshot for the whole block
    (REPEATABLE READ) and refuse writes (READ ONLY): no SET TRANSACTION round trip of its own."""
    isolation_level, read_only = driver.isolation_level, driver.read_only
    driver.isolation_level, driver.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True

    def undo() -> None:
        driver.rollback()  # psycopg changes these only between transactions
        driver.isolation_level, driver.read_only = isolation_level, read_only

    return undo


# Set while a read checks a connection out: it is not pinged (see Database.owned_reads).
unpinged_checkout: ContextVar[bool] = ContextVar("todo_unpinged_checkout", default=False)


def _configure_postgresql(engine: Engine) -> None:
    dialect = engine.dialect

    @event.listens_for(engine, "do_connect")
    def _connect_within_the_call(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        # A host that accepts TCP and never answers holds the call's thread for the connect timeout: no
        # longer than the call has left (psycopg rounds anything under 2 s up to 2).
        cparams["connect_timeout"] = math.ceil(_wait_ms(POSTGRES_CONNECT_TIMEOUT_SECONDS * 1000) / 1000)

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # pool_pre_ping, but for writes only: a connection cut by a restart or failover is replaced before a
        # write uses it. A write cannot be sent again once it failed (it may have been done); a read can,
        # and saves the round trip.
        if unpinged_checkout.get():
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                # As pool_pre_ping does: the pool reconnects, and replaces every connection older than this
                # one at its next checkout, since whatever cut this one (a restart) cut those too.
                raise exc.InvalidatePoolError("the connection was cut") from error
            raise

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Every statement of the transaction (and any lock wait) ends at the call's deadline: the server
        # cancels it, so no connection is held for a call whose caller has gone. A call without a deadline
        # keeps the connection's own limit (set at connect) and saves the round trip.
        _bound_postgresql_statements(connection.exec_driver_sql)


def _bound_postgresql_statements(execute: Callable[[str], Any]) -> None:
    """Ends the open transaction's statements at the call's deadline (nothing to do without one)."""
    if remaining_seconds() is not None:
        execute(f"SET LOCAL statement_timeout = {_wait_ms(POSTGRES_STATEMENT_TIMEOUT_MS)}")
