"""The task domain: plain values passed between the servicer and the data layer."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 4000
QUERY_MAX_LENGTH = 200


class Priority(enum.IntEnum):
    """Mirrors todo.v1.Priority; stored as its number."""

    UNSPECIFIED = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3


class SortField(enum.Enum):
    """The fields ListTasks can order by; the value is the name in `order_by`."""

    CREATE_TIME = "create_time"
    UPDATE_TIME = "update_time"
    DUE_TIME = "due_time"
    TITLE = "title"
    PRIORITY = "priority"


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A stored task as the caller may see it."""

    task_id: str
    owner_id: str
    title: str
    description: str
    completed: bool
    priority: Priority
    due_time: datetime | None
    create_time: datetime
    update_time: datetime
    complete_time: datetime | None
    etag: str


@dataclass(frozen=True, slots=True)
class TaskFields:
    """The fields a caller can write."""

    title: str
    description: str = ""
    completed: bool = False
    priority: Priority = Priority.UNSPECIFIED
    due_time: datetime | None = None

    def fingerprint(self) -> str:
        """What a CreateTask with these fields asks for, in 32 hex digits: a retry with its request_id must ask
        for the same task. Of the validated values, so spelling (white space trimmed, nanoseconds below the
        stored microsecond) changes nothing."""
        due = None if self.due_time is None else self.due_time.isoformat()
        values = [self.title, self.description, self.completed, int(self.priority), due]
        return hashlib.blake2b(json.dumps(values).encode(), digest_size=16).hexdigest()


# Which TaskFields an update changes; the names are the proto field names of `update_mask`.
WRITABLE_FIELDS: tuple[str, ...] = ("title", "description", "completed", "due_time", "priority")


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """What ListTasks selects and how it sorts. Its fingerprint binds page tokens to it."""

    completed: bool | None = None
    text: str = ""
    sort: SortField = SortField.CREATE_TIME
    descending: bool = True

    def fingerprint(self) -> str:
        return f"{self.completed}|{self.sort.value}|{int(self.descending)}|{self.text}"


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the last task's sort value and id (keyset pagination)."""

    sort_value: datetime | str | int | None
    task_id: str

    @classmethod
    def after(cls, record: TaskRecord, sort: SortField) -> Cursor:
        """The cursor of a page that ends with `record`."""
        value = getattr(record, sort.value)
        return cls(sort_value=int(value) if sort is SortField.PRIORITY else value, task_id=record.task_id)


@dataclass(frozen=True, slots=True)
class TaskPage:
    records: list[TaskRecord]
    next_cursor: Cursor | None
    total_size: int
