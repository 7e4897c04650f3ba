"""SQLAlchemy models. Every table that holds user data mixes in OwnedByUser."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Index, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as naive UTC (the same on SQLite and PostgreSQL); loads them aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("refusing a naive datetime: its time zone is unknown")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class OwnedByUser:
    """Marks rows that belong to one user. Reads are filtered to the caller in owner_scope.py."""

    owner_id: Mapped[str] = mapped_column(String(128))


class Task(OwnedByUser, Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    completed: Mapped[bool] = mapped_column(default=False)
    priority: Mapped[int] = mapped_column(default=0)
    due_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime)
    complete_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The CreateTask request_id that made this task, so a retried create finds it instead of adding a twin.
    request_id: Mapped[str | None] = mapped_column(String(36))
    # TaskFields.fingerprint() of that request: a retry must ask for the same task. None on tasks made before
    # migration 0002, whose retries are not compared.
    request_fingerprint: Mapped[str | None] = mapped_column(String(32))
    # Bumped by SQLAlchemy on every UPDATE and checked in its WHERE clause: concurrent writers can't both win.
    revision: Mapped[int] = mapped_column()

    __mapper_args__ = {"version_id_col": revision}  # noqa: RUF012 (SQLAlchemy's declarative API)
    __table_args__ = (
        UniqueConstraint("owner_id", "request_id", name="uq_tasks_owner_request_id"),
        # One index per ListTasks order, so every page is a range scan on (owner, sort key, id).
        Index("ix_tasks_owner_create_time", "owner_id", "create_time", "id"),
        Index("ix_tasks_owner_update_time", "owner_id", "update_time", "id"),
        Index("ix_tasks_owner_due_time", "owner_id", "due_time", "id"),
        Index("ix_tasks_owner_title", "owner_id", "title", "id"),
        Index("ix_tasks_owner_priority", "owner_id", "priority", "id"),
    )


class TaskCount(OwnedByUser, Base):
    """How many tasks an owner keeps, one row per owner with tasks. Written only by the database: triggers
    on `tasks` (migration 0003) keep it equal to the owner's COUNT(*), whoever writes the tasks."""

    __tablename__ = "task_counts"

    owner_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tasks: Mapped[int] = mapped_column()


class SchemaCompatibility(Base):
    """One row: the oldest release (by its head migration's revision) that can run on this schema. Written
    by `todo-server migrate` from the newest migration's `oldest_release`; read by a server of an older
    release that finds the database ahead of its code, during a rolling deploy (server/db/schema.py)."""

    __tablename__ = "schema_compatibility"

    oldest_release: Mapped[str] = mapped_column(String(32), primary_key=True)
