"""The Database: one engine and session factory per process, the transactions writes run in, and the reads
that skip the Session (owned_reads). Every statement is scoped to the caller (server/db/owner_scope.py);
each database's connection setup is in server/db/connections.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Select, exc, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.pool import PoolProxiedConnection

from server.db import connections, owner_scope, schema
from server.db.commit_watch import COMMITS
from server.db.compiled_reads import CompiledRead
from server.db.connections import WRITE_OPTION, ReadBlock, refuse_if_expired, unpinged_checkout
from server.db.owner_scope import SCOPE_PARAMETER, OwnerScopeError, scoped, with_owner
from server.errors import Aborted, CommitOutcomeUnknown, Unavailable

# What the pool raises at checkout when every reconnect it tried was cut too (a database that accepts
# connections and drops them, as during a failover). Caught only around a checkout, where it means that.
_POOL_GAVE_UP = exc.InvalidRequestError
# SQLSTATE of a write refused by a database that takes none: a standby, or a primary mid-failover (PostgreSQL).
_READ_ONLY_SQL_TRANSACTION = "25006"


def _refused_as_read_only(error: exc.DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) == _READ_ONLY_SQL_TRANSACTION


# How long the commit watch waits for the server to take a cancel request.
_CANCEL_TIMEOUT_SECONDS = 2.0


def _commit(session: Session, *, cancellable: bool) -> None:
    """Commits, unless the running call is already past its deadline or the drain's end (then nothing is
    written); raises CommitOutcomeUnknown when the connection is lost during the COMMIT.

    With `cancellable` (PostgreSQL), a COMMIT still running at that moment is cancelled
    (server/db/commit_watch.py): it fails on a live connection, rolled back, as a refused COMMIT does.

    The database may have committed before the connection went (psycopg raises AdminShutdown, or
    OperationalError for a closed socket; SQLAlchemy then marks the error connection_invalidated). A COMMIT
    refused on a live connection (a serialization failure, a cancel, SQLite's disk full) wrote nothing, and is
    raised as it is.
    """
    refuse_if_expired()  # a COMMIT begun late would be cancelled at once: not sent at all
    try:
        if cancellable:
            driver = session.connection().connection.driver_connection
            with COMMITS.watching(functools.partial(driver.cancel_safe, timeout=_CANCEL_TIMEOUT_SECONDS)):
                session.commit()
        else:
            session.commit()
    except exc.DBAPIError as error:
        if not error.connection_invalidated:
            raise
        raise CommitOutcomeUnknown(
            "the connection to the database was lost while committing: the change may have been saved; "
            "read it back before retrying; a CreateTask can be retried with the same request_id"
        ) from None


class Database:
    """One engine and one session factory for the process; sessions come from `transaction()`."""

    def __init__(self, url: str, *, pool_size: int = 16) -> None:
        self.engine = connections.create_engine_for(url, pool_size=pool_size)
        # How owned_reads begins: what the "begin" events do for sessions.
        self._begin_read = connections.configure(self.engine)
        dbapi = self.engine.dialect.loaded_dbapi
        self._driver_faults: tuple[type[Exception], ...] = (dbapi.OperationalError, dbapi.InterfaceError)
        self._driver_error: type[Exception] = dbapi.Error
        # Bounded: the repository's statements are built once per query shape, a few hundred at most.
        self._compiled_read = functools.lru_cache(maxsize=512)(self._compile_owned_read)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite's COMMIT waits for no lock (the write lock is taken at BEGIN IMMEDIATE), only for the disk.
        self._cancellable_commits = self.engine.dialect.name == "postgresql"
        owner_scope.enforce_on(self._sessions)

    def migrate(self) -> None:
        """Runs the Alembic migrations up to head: the only way the schema is made or changed."""
        schema.migrate(self.engine, write_option=WRITE_OPTION)

    def require_current_schema(self) -> None:
        """Raises SchemaError unless this code can run on the schema (the message names the fix)."""
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

        A fault that leaves nothing written becomes Unavailable (clients retry it); a connection lost during
        the COMMIT becomes CommitOutcomeUnknown, as the write may have been saved.

        Past the running call's deadline it raises CallExpired (server/db/connections.py) instead of
        committing, and cancels a COMMIT still running then: a caller that gave up was told nothing was saved,
        so nothing is. Past the end of the server's drain the same, with ShuttingDown (UNAVAILABLE): grpcio
        is about to cancel the call, which tells the caller nothing was saved too.
        """
        refuse_if_expired()
        try:
            with self._sessions() as session:
                session.begin()
                if write:
                    try:
                        session.connection(execution_options={WRITE_OPTION: True})
                    except _POOL_GAVE_UP:
                        raise Unavailable("the database is unavailable; retry later") from None
                yield session
                session.flush()  # the last statements: a fault up to here is before the COMMIT, nothing written
                _commit(session, cancellable=self._cancellable_commits)
        except StaleDataError:
            raise Aborted("the task was changed by someone else; get it again and retry") from None
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError):
            refuse_if_expired()  # the wait was cut short by the deadline, not by a database fault
            raise Unavailable("the database is unavailable; retry later") from None
        except exc.InternalError as error:
            if not _refused_as_read_only(error):
                raise
            # Nothing was written, and a retry reaches the new primary once the failover is done.
            raise Unavailable("the database accepts no writes right now; retry later") from None

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
        token = unpinged_checkout.set(not pinged)
        try:
            return self.engine.pool.connect()
        except (exc.TimeoutError, exc.DBAPIError, _POOL_GAVE_UP, *self._driver_faults):
            raise Unavailable("the database is unavailable; retry later") from None
        finally:
            unpinged_checkout.reset(token)

    def _compile_owned_read(self, statement: Select[Any]) -> CompiledRead:
        read = CompiledRead.of(scoped(statement), self.engine.dialect)
        if not read.binds(SCOPE_PARAMETER):
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
        self._block: ReadBlock | None = None
        self._half_begun = False  # a begin that raised part-way: its settings may be left on the connection
        self._has_read = False

    def __enter__(self) -> Callable[[Select[Any], Mapping[str, Any]], list[tuple[Any, ...]]]:
        refuse_if_expired()
        self._pooled = self._database._checkout(pinged=False)
        return self.read

    def __exit__(self, _kind: object, error: BaseException | None, _traceback: object) -> None:
        self._give_back()
        if isinstance(error, self._database._driver_faults):
            refuse_if_expired()  # the statement was cancelled at the deadline, not by a database fault
            raise Unavailable("the database is unavailable; retry later") from None

    def read(self, statement: Select[Any], parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The caller's rows that `statement` selects."""
        compiled = self._database._compiled_read(statement)
        arguments = compiled.arguments(with_owner(parameters))
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
