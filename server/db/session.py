"""Engine, sessions and reads by key. Every statement on an OwnedByUser entity is scoped to the caller here."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple, cast

import psycopg
from sqlalchemy import Engine, Select, bindparam, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.pool import PoolProxiedConnection

from server.call_deadline import remaining_seconds
from server.db import schema
from server.db.compiled_reads import CompiledRead
from server.db.models import Base, OwnedByUser
from server.errors import Aborted, DeadlineExceeded, Unavailable
from server.identity import current_user_id

_WRITE_OPTION = "todo_write"
_BUSY_TIMEOUT_KEY = "todo_busy_timeout_ms"  # in a pooled connection's info: its busy_timeout now
SQLITE_BUSY_TIMEOUT_MS = 5000
# The longest a statement may run on PostgreSQL when the call has no deadline.
POSTGRES_STATEMENT_TIMEOUT_MS = 30_000
# Connections older than this are replaced before idle-killing proxies and firewalls cut them.
POSTGRES_POOL_RECYCLE_SECONDS = 1800
# A database host that does not answer fails the call (UNAVAILABLE) instead of hanging its thread.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5


class CallExpired(DeadlineExceeded):
    """The caller's deadline passed: whatever this transaction did is rolled back, nothing is kept."""

    def __init__(self) -> None:
        super().__init__("the call's deadline passed before the database answered; nothing was written")


def _wait_ms(longest_ms: int) -> int:
    """How long the database may make this call wait: `longest_ms`, or less if the call's deadline is sooner."""
    remaining = remaining_seconds()
    if remaining is None:
        return longest_ms
    if remaining <= 0:
        raise CallExpired
    return max(1, min(longest_ms, int(remaining * 1000)))


def _refuse_if_expired() -> None:
    remaining = remaining_seconds()
    if remaining is not None and remaining <= 0:
        raise CallExpired


class CrossUserWriteError(RuntimeError):
    """A flush tried to store a row owned by someone other than the caller (a bug: fail closed)."""


# The owner filter every ORM statement on an OwnedByUser entity gets: built once, with the owner as a bound
# parameter filled in per execution (below). A per-call closure would cost SQLAlchemy a fresh analysis of
# the criteria on every statement (about a quarter of a GetTask), for the same SQL.
_SCOPE_PARAMETER = "todo_scope_owner_id"


@functools.cache
def _owner_criteria() -> tuple[Any, ...]:
    owned = [mapper.class_ for mapper in Base.registry.mappers if issubclass(mapper.class_, OwnedByUser)]
    return tuple(
        with_loader_criteria(cls, cls.owner_id == bindparam(_SCOPE_PARAMETER), include_aliases=True)
        for cls in owned
    )


@functools.lru_cache(maxsize=256)
def _scoped(statement: Any) -> Any:
    # Statements built once (the repository's lookups by id) stay the same object, and so does their
    # scoped copy: SQLAlchemy then finds its cache key memoized instead of recomputing it per call.
    return statement.options(*_owner_criteria())


class OwnerScopeError(RuntimeError):
    """A statement brought its own owner scope or many parameter sets, or is one the scope does not reach
    (a bug: fail closed)."""


def _with_owner(parameters: Any) -> dict[str, Any]:
    """`parameters` plus the caller as the owner; raises NoIdentityError when no caller is authenticated."""
    user_id = current_user_id()  # never run a statement unscoped
    if not isinstance(parameters, Mapping) or _SCOPE_PARAMETER in parameters:
        # executemany, or a caller naming the owner itself: neither is how this data layer reads rows.
        raise OwnerScopeError("refusing a statement that brings its own owner scope or many parameter sets")
    return {**parameters, _SCOPE_PARAMETER: user_id}


def _scope_to_caller(state: ORMExecuteState) -> None:
    if state.is_column_load or state.is_relationship_load:
        return  # loads for rows already fetched through a scoped statement
    if not (state.is_select or state.is_update or state.is_delete):
        return
    parameters = _with_owner(state.parameters or {})
    state.statement = _scoped(state.statement)
    state.parameters = parameters


def _refuse_foreign_rows(session: Session, _flush_context: Any, _instances: Any) -> None:
    user_id = current_user_id()
    for row in (*session.new, *session.dirty, *session.deleted):
        if isinstance(row, OwnedByUser) and row.owner_id != user_id:
            raise CrossUserWriteError("refusing to write a row owned by another user")


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

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # BEGIN IMMEDIATE for writes: a deferred transaction that reads and then writes can fail with
        # SQLITE_BUSY at its first write instead of waiting its turn.
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
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


class _ReadBlock(NamedTuple):
    """How one OwnedReads block sends its statements, and what undoes its settings before the connection
    goes back to the pool (None: nothing to undo)."""

    cursor: Any
    send: Callable[[str, Any], list[Any]]  # (sql, driver arguments) -> rows
    undo: Callable[[], None] | None = None


# How a read block begins on each database: (driver connection, pooled connection's info, snapshot).
_BeginRead = Callable[[Any, dict[str, Any], bool], _ReadBlock]


def _sender(cursor: Any) -> Callable[[str, Any], list[Any]]:
    def send(sql: str, arguments: Any) -> list[Any]:
        cursor.execute(sql, arguments)
        return cursor.fetchall()

    return send


def _begin_plain_read(driver: Any, _info: dict[str, Any], _snapshot: bool) -> _ReadBlock:
    cursor = driver.cursor()
    return _ReadBlock(cursor, _sender(cursor))


def _begin_sqlite_read(driver: Any, info: dict[str, Any], snapshot: bool) -> _ReadBlock:
    cursor = driver.cursor()
    _bound_sqlite_lock_wait(cursor.execute, info)
    if snapshot:
        cursor.execute("BEGIN")  # else each statement is its own transaction
    return _ReadBlock(cursor, _sender(cursor))


def _begin_postgresql_read(driver: Any, _info: dict[str, Any], snapshot: bool) -> _ReadBlock:
    if snapshot:
        undo = _begin_snapshot(driver)
        cursor = driver.cursor()
        _bound_postgresql_statements(cursor.execute)
        return _ReadBlock(cursor, _sender(cursor), undo)
    # Each statement alone, in autocommit: one round trip where BEGIN, the statement and the pool's
    # ROLLBACK took three.
    driver.autocommit = True
    undo = functools.partial(setattr, driver, "autocommit", False)  # the next user of the connection may write
    if remaining_seconds() is None:
        cursor = driver.cursor()
        return _ReadBlock(cursor, _sender(cursor), undo)
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

    return _ReadBlock(cursor, send_bounded, undo)


def _begin_snapshot(driver: psycopg.Connection[Any]) -> Callable[[], None]:
    """Makes the BEGIN that psycopg sends before the first statement take one snapshot for the whole block
    (REPEATABLE READ) and refuse writes (READ ONLY): no SET TRANSACTION round trip of its own."""
    isolation_level, read_only = driver.isolation_level, driver.read_only
    driver.isolation_level, driver.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True

    def undo() -> None:
        driver.rollback()  # psycopg changes these only between transactions
        driver.isolation_level, driver.read_only = isolation_level, read_only

    return undo


# What the pool raises at checkout when every reconnect it tried was cut too (a database that accepts
# connections and drops them, as during a failover). Caught only around a checkout, where it means that.
_POOL_GAVE_UP = exc.InvalidRequestError

# Set while a read checks a connection out: it is not pinged (see OwnedReads).
_unpinged_checkout: ContextVar[bool] = ContextVar("todo_unpinged_checkout", default=False)


def _configure_postgresql(engine: Engine) -> None:
    dialect = engine.dialect

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # pool_pre_ping, but for writes only: a connection cut by a restart or failover is replaced before a
        # write uses it. A write cannot be sent again once it failed (it may have been done); a read can,
        # and saves the round trip.
        if _unpinged_checkout.get():
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


class Database:
    """One engine and one session factory for the process; sessions come from `transaction()`."""

    def __init__(self, url: str, *, pool_size: int = 16) -> None:
        if make_url(url).get_backend_name() == "sqlite":
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
        self.engine = create_engine(url, **options)
        # How owned_reads begins: what the "begin" events do for sessions.
        self._begin_read: _BeginRead = _begin_plain_read
        if self.engine.dialect.name == "sqlite":
            _configure_sqlite(self.engine)
            self._begin_read = _begin_sqlite_read
        elif self.engine.dialect.name == "postgresql":
            _configure_postgresql(self.engine)
            self._begin_read = _begin_postgresql_read
        dbapi = self.engine.dialect.loaded_dbapi
        self._driver_faults: tuple[type[Exception], ...] = (dbapi.OperationalError, dbapi.InterfaceError)
        self._driver_error: type[Exception] = dbapi.Error
        # Bounded: the repository's statements are built once per query shape, a few hundred at most.
        self._compiled_read = functools.lru_cache(maxsize=512)(self._compile_owned_read)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "do_orm_execute", _scope_to_caller)
        event.listen(self._sessions, "before_flush", _refuse_foreign_rows)

    def migrate(self) -> None:
        """Runs the Alembic migrations up to head: the only way the schema is made or changed."""
        schema.migrate(self.engine, write_option=_WRITE_OPTION)

    def require_current_schema(self) -> None:
        """Raises SchemaBehindError when the schema is behind this code (the message names the fix)."""
        schema.require_current(self.engine)

    def ping(self) -> bool:
        """Whether the database answers a trivial query now."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except exc.SQLAlchemyError:
            return False
        return True

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Session]:
        """A session in a transaction that commits on success; database faults become domain errors.

        Past the running call's deadline it raises CallExpired instead of committing: a caller that gave up
        was told nothing was saved, so nothing is.
        """
        _refuse_if_expired()
        try:
            with self._sessions() as session, session.begin():
                if write:
                    try:
                        session.connection(execution_options={_WRITE_OPTION: True})
                    except _POOL_GAVE_UP:
                        raise Unavailable("the database is unavailable; retry later") from None
                yield session
                _refuse_if_expired()
        except StaleDataError:
            raise Aborted("the task was changed by someone else; get it again and retry") from None
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError):
            _refuse_if_expired()  # the wait was cut short by the deadline, not by a database fault
            raise Unavailable("the database is unavailable; retry later") from None

    def fetch_owned(self, statement: Select[Any], parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The caller's rows that `statement` selects (one read of `owned_reads`)."""
        with self.owned_reads(snapshot=False) as read:  # one statement sees one snapshot anyway
            return read(statement, parameters)

    def owned_reads(self, *, snapshot: bool = True) -> OwnedReads:
        """A reader of the caller's rows: `with database.owned_reads() as read: rows = read(statement, params)`.

        For the hot reads (GetTask, ListTasks), where the Session and the ORM's loading cost more than the
        queries: statements run on the driver. The owner scope is the Session's own: each statement gets
        the same loader criteria, and the caller's id is filled in here. A statement that binds no owner
        once scoped (a Core select, which loader criteria do not reach) is refused with OwnerScopeError.
        The reads of one block share a connection and, with `snapshot`, see the database as it was at
        their first read (REPEATABLE READ on PostgreSQL). Faults become domain errors as in `transaction()`.
        """
        return OwnedReads(self, snapshot)

    def _checkout(self, *, pinged: bool) -> PoolProxiedConnection:
        token = _unpinged_checkout.set(not pinged)
        try:
            return self.engine.pool.connect()
        except (exc.TimeoutError, exc.DBAPIError, _POOL_GAVE_UP, *self._driver_faults):
            raise Unavailable("the database is unavailable; retry later") from None
        finally:
            _unpinged_checkout.reset(token)

    def _compile_owned_read(self, statement: Select[Any]) -> CompiledRead:
        read = CompiledRead.of(_scoped(statement), self.engine.dialect)
        if not read.binds(_SCOPE_PARAMETER):
            raise OwnerScopeError("refusing a read that the owner scope does not reach (not an ORM statement)")
        return read

    def dispose(self) -> None:
        self.engine.dispose()


class OwnedReads:
    """One `Database.owned_reads` block, on a connection checked out without a ping (a round trip per call).

    A connection that died idle (a database restart, a failover) fails at the block's first statement; as
    nothing was read yet, that statement is sent once more, on a connection pinged at checkout. A fault
    after that is the caller's (UNAVAILABLE): the block's later reads must share the first one's snapshot.
    """

    def __init__(self, database: Database, snapshot: bool) -> None:
        self._database = database
        self._snapshot = snapshot
        self._pooled: PoolProxiedConnection | None = None
        self._block: _ReadBlock | None = None
        self._half_begun = False  # a begin that raised part-way: its settings may be left on the connection
        self._has_read = False

    def __enter__(self) -> Callable[[Select[Any], Mapping[str, Any]], list[tuple[Any, ...]]]:
        _refuse_if_expired()
        self._pooled = self._database._checkout(pinged=False)
        return self.read

    def __exit__(self, _kind: object, error: BaseException | None, _traceback: object) -> None:
        self._give_back()
        if isinstance(error, self._database._driver_faults):
            _refuse_if_expired()  # the statement was cancelled at the deadline, not by a database fault
            raise Unavailable("the database is unavailable; retry later") from None

    def read(self, statement: Select[Any], parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The caller's rows that `statement` selects."""
        compiled = self._database._compiled_read(statement)
        arguments = compiled.arguments(_with_owner(parameters))
        try:
            rows = self._execute(compiled.sql, arguments)
        except self._database._driver_faults as error:
            lost = self._lost(error)
            if self._has_read or not lost:
                raise
            self._give_back()
            self._pooled = self._database._checkout(pinged=True)
            rows = self._execute(compiled.sql, arguments)
        self._has_read = True
        return [compiled.row(row) for row in rows]

    def _execute(self, sql: str, arguments: Any) -> list[Any]:
        if self._block is None:
            pooled = cast(PoolProxiedConnection, self._pooled)
            self._half_begun = True
            self._block = self._database._begin_read(pooled.driver_connection, pooled.info, self._snapshot)
            self._half_begun = False
        return self._block.send(sql, arguments)

    def _lost(self, error: Exception) -> bool:
        """Whether `error` means the connection is gone; if so, it is thrown away, never handed out again."""
        pooled = cast(PoolProxiedConnection, self._pooled)
        cursor = self._block.cursor if self._block is not None else None
        if not self._database.engine.dialect.is_disconnect(error, pooled, cursor):
            return False
        pooled.invalidate()
        return True

    def _give_back(self) -> None:
        """Gives the connection back to the pool (which rolls a read transaction back) as it was taken."""
        pooled, block, half_begun = self._pooled, self._block, self._half_begun
        if pooled is None:
            return
        self._pooled, self._block, self._half_begun = None, None, False
        try:
            if block is not None:
                block.cursor.close()
                if block.undo is not None and pooled.is_valid:
                    block.undo()
            elif half_begun and pooled.is_valid:
                pooled.invalidate()  # settings half made and never undone: not for the next call
        except self._database._driver_error:
            pooled.invalidate()  # lost, or in a state we cannot undo: not for the next call
        finally:
            pooled.close()
