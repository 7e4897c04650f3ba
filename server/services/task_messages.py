"""Translating todo.v1 messages to domain values and back, with field-level validation."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf import field_mask_pb2, timestamp_pb2
from todo.v1 import task_service_pb2 as pb

from server.errors import FieldViolation, InvalidArgument
from server.services.resource_names import task_name
from server.tasks import (
    DESCRIPTION_MAX_LENGTH,
    QUERY_MAX_LENGTH,
    TITLE_MAX_LENGTH,
    WRITABLE_FIELDS,
    Cursor,
    Priority,
    SortField,
    TaskFields,
    TaskFilter,
    TaskPage,
    TaskRecord,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# A ListTasks response stays under 4 MiB, what gRPC clients (grpcio, grpc-go, grpcurl) accept by default:
# 1000 tasks with long descriptions would be up to 17 MB, so such a page ends early, with a next_page_token.
MAX_PAGE_BYTES = 3 * 1024 * 1024
_REPEATED_ENTRY_OVERHEAD = 4  # a Task's tag and length prefix in `tasks`
# A title is one line; a description may hold tabs and line breaks. NUL is never storable (PostgreSQL).
_TITLE_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
_DESCRIPTION_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ORDER_BY = re.compile(r"\s*([a-z_]+)(?:\s+(asc|desc))?\s*")


class Violations:
    """Collects every problem in a request so the caller can fix them all at once."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self._items:
            raise InvalidArgument(self._items)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    # What Timestamp.FromDatetime computes, without its time zone round trips: 4 per task, on every read.
    since_epoch = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since_epoch.days * 86_400 + since_epoch.seconds, nanos=since_epoch.microseconds * 1000
    )


def page_to_protos(page: TaskPage, sort: SortField) -> tuple[list[pb.Task], Cursor | None]:
    """The page's tasks, as many as fit in MAX_PAGE_BYTES (one at least), and the cursor after the last."""
    tasks: list[pb.Task] = []
    size = 0
    for record in page.records:
        task = task_to_proto(record)
        size += task.ByteSize() + _REPEATED_ENTRY_OVERHEAD
        if size > MAX_PAGE_BYTES and tasks:
            return tasks, Cursor.after(page.records[len(tasks) - 1], sort)
        tasks.append(task)
    return tasks, page.next_cursor


def task_to_proto(record: TaskRecord) -> pb.Task:
    return pb.Task(
        name=task_name(record.owner_id, record.task_id),
        title=record.title,
        description=record.description,
        completed=record.completed,
        priority=int(record.priority),
        due_time=_timestamp(record.due_time),
        create_time=_timestamp(record.create_time),
        update_time=_timestamp(record.update_time),
        complete_time=_timestamp(record.complete_time),
        etag=record.etag,
    )


def _title(task: pb.Task, field: str, violations: Violations) -> str:
    title = task.title.strip()
    if not title:
        violations.add(field, "is required: 1 to 200 characters")
    elif len(title) > TITLE_MAX_LENGTH:
        violations.add(field, f"is {len(title)} characters long; the limit is {TITLE_MAX_LENGTH}")
    elif _TITLE_FORBIDDEN.search(title):
        violations.add(field, "must be one line with no control characters")
    return title


def _description(task: pb.Task, field: str, violations: Violations) -> str:
    description = task.description
    if len(description) > DESCRIPTION_MAX_LENGTH:
        violations.add(field, f"is {len(description)} characters long; the limit is {DESCRIPTION_MAX_LENGTH}")
    elif _DESCRIPTION_FORBIDDEN.search(description):
        violations.add(field, "must not contain control characters other than tab and line breaks")
    return description


def _priority(task: pb.Task, field: str, violations: Violations) -> Priority:
    try:
        return Priority(task.priority)
    except ValueError:
        violations.add(field, f"{task.priority} is not a Priority; use PRIORITY_LOW, _MEDIUM or _HIGH")
        return Priority.UNSPECIFIED


def _due_time(task: pb.Task, field: str, violations: Violations) -> datetime | None:
    if not task.HasField("due_time"):
        return None
    try:
        # Stored to the microsecond, like every time here.
        return task.due_time.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        violations.add(field, "is not a valid timestamp (years 1 to 9999, nanos 0 to 999999999)")
        return None


_READERS = {
    "title": _title,
    "description": _description,
    "completed": lambda task, _field, _violations: task.completed,
    "priority": _priority,
    "due_time": _due_time,
}


def task_fields(task: pb.Task, *, field: str, violations: Violations) -> TaskFields:
    """The writable fields of a new task, validated."""
    values = {name: read(task, f"{field}.{name}", violations) for name, read in _READERS.items()}
    return TaskFields(**values)


# Named in a mask, these are ignored (AIP-161), so that a client may send back the mask it read with: the
# output-only fields, and the etag, which the request carries as a precondition, not as a new value.
_IGNORED_PATHS = frozenset({"name", "create_time", "update_time", "complete_time", "etag"})


def task_changes(task: pb.Task, mask: field_mask_pb2.FieldMask, violations: Violations) -> dict[str, Any]:
    """The fields an update changes, by `mask` (`*` = all; no mask = those set in `task`, per AIP-134).
    A mask is a set of paths: one named twice counts once (FieldMask's canonical form drops repeats)."""
    paths = [path for path in dict.fromkeys(mask.paths) if path not in _IGNORED_PATHS]
    if mask.paths and not paths:
        violations.add("update_mask", "names only output-only fields; name a field to change")
        return {}
    if paths == ["*"]:
        paths = list(WRITABLE_FIELDS)
    elif "*" in paths:
        violations.add("update_mask", "'*' names every field: send it alone, or name the fields")
        return {}
    elif not paths:
        paths = [name for name in WRITABLE_FIELDS if _is_set(task, name)]
    for path in paths:
        if path not in WRITABLE_FIELDS:
            violations.add(
                "update_mask", f"{path[:60]!r} is not updatable; use {', '.join(WRITABLE_FIELDS)} or '*'"
            )
    if not paths:
        violations.add("update_mask", "names no field to change")
    return {name: _READERS[name](task, f"task.{name}", violations) for name in WRITABLE_FIELDS if name in paths}


def _is_set(task: pb.Task, name: str) -> bool:
    return task.HasField(name) if name == "due_time" else bool(getattr(task, name))


def request_id(value: str, violations: Violations) -> str | None:
    """The canonical form of a CreateTask request_id, or None when there is none."""
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        violations.add("request_id", "must be a UUID, such as one from uuid4()")
        return None


def page_size(value: int, violations: Violations) -> int:
    if value < 0:
        violations.add("page_size", "must not be negative")
    if value <= 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


def task_filter(request: pb.ListTasksRequest, violations: Violations) -> TaskFilter:
    text = request.query.strip()
    if len(text) > QUERY_MAX_LENGTH:
        violations.add("query", f"is longer than {QUERY_MAX_LENGTH} characters")
    elif "\x00" in text:
        violations.add("query", "must not contain NUL characters")
    sort, descending = SortField.CREATE_TIME, True
    if request.order_by.strip():
        match = _ORDER_BY.fullmatch(request.order_by)
        fields = {f.value for f in SortField}
        if match is None or match.group(1) not in fields:
            violations.add(
                "order_by",
                f"{request.order_by[:60]!r} is not supported; use one of {', '.join(sorted(fields))}, "
                "optionally followed by ' asc' or ' desc'",
            )
        else:
            sort, descending = SortField(match.group(1)), match.group(2) == "desc"
    completed = request.completed if request.HasField("completed") else None
    return TaskFilter(completed=completed, text=text, sort=sort, descending=descending)
