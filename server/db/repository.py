"""TaskRepository: the caller's tasks. The owner always comes from the identity, never from a parameter."""

from __future__ import annotations

import enum
import functools
import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, bindparam, exc, func, or_, select, tuple_
from sqlalchemy.orm import Session

from server.db.models import Task, TaskCount
from server.db.session import Database
from server.errors import Aborted, AlreadyExists, NotFound, ResourceExhausted
from server.identity import current_user_id
from server.tasks import Cursor, Priority, SortField, TaskFields, TaskFilter, TaskPage, TaskRecord

_SORT_COLUMNS: dict[SortField, Any] = {
    SortField.CREATE_TIME: Task.create_time,
    SortField.UPDATE_TIME: Task.update_time,
    SortField.DUE_TIME: Task.due_time,
    SortField.TITLE: Task.title,
    SortField.PRIORITY: Task.priority,
}
_NULLABLE_SORT_FIELDS = frozenset({SortField.DUE_TIME})

# Built once: making a statement costs more than SQLAlchemy's cached run of it. The session adds the owner.
_BY_ID = select(Task).where(Task.id == bindparam("task_id"))  # the entity, through the Session
# A write locks its row as it reads it (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers), so
# a write that commits meanwhile is waited for and read, not found later as a revision conflict: a write
# without an etag then applies on top of it, and one with an etag is compared with what is really there.
_BY_ID_FOR_WRITE = _BY_ID.with_for_update()
# Reads run without a Session (Database.owned_reads) and select these columns, in this order (_record_of_row).
_RECORD_COLUMNS = (
    Task.id,
    Task.owner_id,
    Task.title,
    Task.description,
    Task.completed,
    Task.priority,
    Task.due_time,
    Task.create_time,
    Task.update_time,
    Task.complete_time,
    Task.revision,
)
_RECORD_BY_ID = select(*_RECORD_COLUMNS).where(Task.id == bindparam("task_id"))
_TASKS_KEPT = select(TaskCount.tasks)  # the caller's count: the session adds the owner
# The task a request_id made, and what that request asked for (TaskFields.fingerprint), last.
_RECORD_BY_REQUEST_ID = select(*_RECORD_COLUMNS, Task.request_fingerprint).where(
    Task.request_id == bindparam("request_id")
)


def new_task_id() -> str:
    """128 random bits, hex: unguessable, and safe in a resource name."""
    return secrets.token_hex(16)


def _now() -> datetime:
    return datetime.now(UTC)


def _etag_of(task_id: str, revision: int) -> str:
    return hashlib.blake2b(f"{task_id}:{revision}".encode(), digest_size=8).hexdigest()


def _etag(task: Task) -> str:
    return _etag_of(task.id, task.revision)


def _record(task: Task) -> TaskRecord:
    return _record_of_row(tuple(getattr(task, column.key) for column in _RECORD_COLUMNS))


def _record_of_row(row: tuple[Any, ...]) -> TaskRecord:
    """The record of a row of _RECORD_COLUMNS."""
    (task_id, owner_id, title, description, completed, priority, due_time, create_time, update_time,
     complete_time, revision) = row  # fmt: skip
    return TaskRecord(
        task_id=task_id,
        owner_id=owner_id,
        title=title,
        description=description,
        completed=completed,
        priority=Priority(priority),
        due_time=due_time,
        create_time=create_time,
        update_time=update_time,
        complete_time=complete_time,
        etag=_etag_of(task_id, revision),
    )


def _not_found(task_id: str) -> NotFound:
    return NotFound(f"task {task_id!r} not found")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _Shape(NamedTuple):
    """What a ListTasks query's statements depend on: which filters are set (not their values), the order."""

    by_completed: bool
    by_text: bool
    sort: SortField
    descending: bool

    @classmethod
    def of(cls, task_filter: TaskFilter) -> _Shape:
        by_completed = task_filter.completed is not None
        return cls(by_completed, bool(task_filter.text), task_filter.sort, task_filter.descending)


def _conditions(shape: _Shape) -> list[ColumnElement[bool]]:
    """The filter's conditions, its values left as bound parameters (_filter_parameters gives them)."""
    conditions: list[ColumnElement[bool]] = []
    if shape.by_completed:
        conditions.append(Task.completed == bindparam("completed"))
    if shape.by_text:
        pattern = bindparam("pattern", type_=Task.title.type)
        conditions.append(
            or_(Task.title.ilike(pattern, escape="\\"), Task.description.ilike(pattern, escape="\\"))
        )
    return conditions


def _filter_parameters(task_filter: TaskFilter) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    if task_filter.completed is not None:
        parameters["completed"] = task_filter.completed
    if task_filter.text:
        parameters["pattern"] = f"%{_escape_like(task_filter.text)}%"
    return parameters


class _Seek(enum.Enum):
    """Where a page starts: at the first task, or after a cursor with or without a sort value."""

    FIRST = enum.auto()
    AFTER_VALUE = enum.auto()
    AFTER_NO_VALUE = enum.auto()  # the cursor's task has no value for a nullable sort key

    @classmethod
    def of(cls, after: Cursor | None) -> _Seek:
        if after is None:
            return cls.FIRST
        return cls.AFTER_NO_VALUE if after.sort_value is None else cls.AFTER_VALUE


# Statements are built once per query shape: what the filter constrains (not its values), the order, and the
# seek. Their values are bound parameters, so the session compiles each shape once (a few hundred at most).
@functools.cache
def _page_statements(shape: _Shape, seek: _Seek) -> tuple[Select[tuple[Any, ...]], ...]:
    """The statements that, run in turn, yield the tasks after the cursor in the filter's order.

    Keyset pagination: each statement seeks past the cursor with a row-value comparison on
    (sort key, id), a range scan on the (owner, sort key, id) index whatever the page number.
    A nullable sort key is split in two statements (tasks with a value, tasks without), since NULL
    never compares: unset values come last ascending and first descending. Each takes `limit`.
    """
    column = _SORT_COLUMNS[shape.sort]
    descending = shape.descending
    base = select(*_RECORD_COLUMNS).where(*_conditions(shape)).limit(bindparam("limit"))
    by_key = base.order_by(*((column.desc(), Task.id.desc()) if descending else (column, Task.id)))
    after_id = bindparam("after_id", type_=Task.id.type)

    def seek_past(statement: Select[tuple[Any, ...]]) -> Select[tuple[Any, ...]]:
        position = tuple_(column, Task.id)
        bound = tuple_(bindparam("after_value", type_=column.type), after_id)
        return statement.where(position < bound if descending else position > bound)

    if shape.sort not in _NULLABLE_SORT_FIELDS:
        return (by_key,) if seek is _Seek.FIRST else (seek_past(by_key),)

    with_value = by_key.where(column.is_not(None))
    without_value = base.where(column.is_(None)).order_by(Task.id.desc() if descending else Task.id)
    if seek is _Seek.FIRST:
        return (without_value, with_value) if descending else (with_value, without_value)
    if seek is _Seek.AFTER_NO_VALUE:
        past = without_value.where(Task.id < after_id if descending else Task.id > after_id)
        return (past, with_value) if descending else (past,)
    return (seek_past(with_value),) if descending else (seek_past(with_value), without_value)


@functools.cache
def _count_statement(shape: _Shape) -> Select[tuple[int]]:
    return select(func.count()).select_from(Task).where(*_conditions(shape))


TASK_LIMIT_REACHED = "TASK_LIMIT_REACHED"


class TaskRepository:
    """Reads and writes the current caller's tasks; with `max_tasks_per_user`, a caller keeps at most that many."""

    def __init__(self, database: Database, *, max_tasks_per_user: int | None = None) -> None:
        self._db = database
        self._max_tasks = max_tasks_per_user

    def create(self, *, fields: TaskFields, request_id: str | None = None) -> TaskRecord:
        """Stores a new task for the caller. With a `request_id` the caller used before: returns that task
        (as it is now) when `fields` are what that request asked for, else raises AlreadyExists."""
        fingerprint = fields.fingerprint() if request_id is not None else None
        if request_id is not None and (earlier := self._made_by(request_id, fingerprint)) is not None:
            return earlier
        now = _now()
        task = Task(
            id=new_task_id(),
            owner_id=current_user_id(),
            request_id=request_id,
            request_fingerprint=fingerprint,
            title=fields.title,
            description=fields.description,
            completed=fields.completed,
            priority=int(fields.priority),
            due_time=fields.due_time,
            create_time=now,
            update_time=now,
            complete_time=now if fields.completed else None,
        )
        try:
            with self._db.transaction(write=True) as session:
                session.add(task)
                session.flush()
                self._refuse_past_the_limit(session)
                return _record(task)
        except exc.IntegrityError:
            # A retry with the same request_id committed first (perhaps on another replica): answer with it.
            if request_id is not None and (earlier := self._made_by(request_id, fingerprint)) is not None:
                return earlier
            raise

    def _refuse_past_the_limit(self, session: Session) -> None:
        """Raises ResourceExhausted (rolling the create back) when, with the task just inserted, the caller
        keeps more than `max_tasks_per_user`. One row read: the database keeps the count (task_counts,
        migration 0003). The insert's trigger locks that row until the create commits (PostgreSQL; SQLite's
        BEGIN IMMEDIATE serialises writers anyway): one caller's racing creates take turns, the bound is exact."""
        if self._max_tasks is None:
            return
        if session.scalar(_TASKS_KEPT) > self._max_tasks:
            raise ResourceExhausted(
                f"you keep {self._max_tasks} tasks, the most one user may; delete some to add more",
                reason=TASK_LIMIT_REACHED,
            )

    def _made_by(self, request_id: str, fingerprint: str | None) -> TaskRecord | None:
        """The caller's task that `request_id` made, or None; AlreadyExists if that request asked for another."""
        rows = self._db.fetch_owned(_RECORD_BY_REQUEST_ID, {"request_id": request_id})
        if not rows:
            return None
        *columns, asked_for = rows[0]  # unique per owner: one row at most
        record = _record_of_row(tuple(columns))
        if asked_for is not None and asked_for != fingerprint:
            raise AlreadyExists(
                f"request_id {request_id} already made task {record.task_id} from a different request: "
                "a new task needs a new request_id"
            )
        return record

    def get(self, *, task_id: str) -> TaskRecord:
        rows = self._db.fetch_owned(_RECORD_BY_ID, {"task_id": task_id})
        if not rows:
            raise _not_found(task_id)
        return _record_of_row(rows[0])  # the primary key: one row at most

    def list(self, *, task_filter: TaskFilter, after: Cursor | None, limit: int) -> TaskPage:
        """Up to `limit` tasks after `after`, the cursor of the next page, and how many match in all."""
        shape = _Shape.of(task_filter)
        parameters = _filter_parameters(task_filter)
        if after is not None:
            parameters |= {"after_value": after.sort_value, "after_id": after.task_id}
        rows: list[tuple[Any, ...]] = []
        with self._db.owned_reads() as read:
            for statement in _page_statements(shape, _Seek.of(after)):
                wanted = limit + 1 - len(rows)  # one more than the page tells whether another follows
                if wanted <= 0:
                    break
                rows.extend(read(statement, {**parameters, "limit": wanted}))
            ((total,),) = read(_count_statement(shape), parameters)
        records = [_record_of_row(row) for row in rows[:limit]]
        next_cursor = Cursor.after(records[-1], task_filter.sort) if len(rows) > limit else None
        return TaskPage(records=records, next_cursor=next_cursor, total_size=total)

    def update(self, *, task_id: str, changes: Mapping[str, Any], etag: str | None) -> TaskRecord:
        """Applies `changes` (TaskFields names → values); with `etag`, only if the task is unchanged."""
        with self._db.transaction(write=True) as session:
            task = self._load_for_write(session, task_id, etag)
            now = _now()
            if "completed" in changes and changes["completed"] != task.completed:
                task.complete_time = now if changes["completed"] else None
            for field, value in changes.items():
                setattr(task, field, int(value) if field == "priority" else value)
            task.update_time = now
            session.flush()
            return _record(task)

    def delete(self, *, task_id: str, etag: str | None) -> None:
        with self._db.transaction(write=True) as session:
            session.delete(self._load_for_write(session, task_id, etag))
            session.flush()

    @staticmethod
    def _load_for_write(session: Any, task_id: str, etag: str | None) -> Task:
        task = session.scalars(_BY_ID_FOR_WRITE, {"task_id": task_id}).one_or_none()
        if task is None:
            raise _not_found(task_id)
        if etag and etag != _etag(task):
            raise Aborted("the task's etag does not match: it changed since you read it; get it again")
        return task
