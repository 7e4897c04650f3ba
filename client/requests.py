"""Building TaskService requests from keyword arguments: shared by the sync and the asyncio client."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from google.protobuf import field_mask_pb2, timestamp_pb2
from todo.v1 import task_service_pb2 as pb

ME = "users/me"

PriorityLike = int | str


def priority_value(priority: PriorityLike) -> int:
    """`pb.PRIORITY_HIGH`, `"high"` or `"PRIORITY_HIGH"` → the enum number."""
    if isinstance(priority, int):
        return priority
    name = priority.strip().upper()
    try:
        return pb.Priority.Value(name if name.startswith("PRIORITY_") else f"PRIORITY_{name}")
    except ValueError:
        raise ValueError(f"priority {priority!r} is not one of low, medium, high") from None


def task_name(name_or_id: str) -> str:
    """A task's resource name: `users/me/tasks/{id}` for a bare id, the name itself otherwise."""
    return name_or_id if "/" in name_or_id else f"{ME}/tasks/{name_or_id}"


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    if moment.tzinfo is None:
        raise ValueError(f"due_time {moment.isoformat()} has no time zone: pass an aware datetime")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def create_request(
    title: str,
    *,
    description: str = "",
    priority: PriorityLike = pb.PRIORITY_UNSPECIFIED,
    due_time: datetime | None = None,
    completed: bool = False,
    parent: str = ME,
    request_id: str | None = None,
) -> pb.CreateTaskRequest:
    """`request_id` defaults to a fresh UUID, so retries of this request never make a second task."""
    task = pb.Task(title=title, description=description, priority=priority_value(priority), completed=completed)
    if due_time is not None:
        task.due_time.CopyFrom(_timestamp(due_time))
    return pb.CreateTaskRequest(parent=parent, task=task, request_id=request_id or str(uuid.uuid4()))


def list_request(
    *,
    parent: str = ME,
    page_size: int = 0,
    page_token: str = "",
    completed: bool | None = None,
    query: str = "",
    order_by: str = "",
) -> pb.ListTasksRequest:
    request = pb.ListTasksRequest(
        parent=parent, page_size=page_size, page_token=page_token, query=query, order_by=order_by
    )
    if completed is not None:
        request.completed = completed
    return request


# The fields an update may reset to empty (a title is required, and `completed` is set to false instead).
CLEARABLE_FIELDS = ("due_time", "priority", "description")


def update_request(
    name: str,
    *,
    title: str | None = None,
    description: str | None = None,
    completed: bool | None = None,
    priority: PriorityLike | None = None,
    due_time: datetime | None = None,
    etag: str = "",
    clear: Iterable[str] = (),
) -> pb.UpdateTaskRequest:
    """An update of exactly the fields given: the update mask lists them. `clear` names fields to reset
    (no due date, no priority, no description): in the mask, unset in the task."""
    task = pb.Task(name=task_name(name), etag=etag)
    paths: list[str] = []
    for field, value in (("title", title), ("description", description), ("completed", completed)):
        if value is not None:
            setattr(task, field, value)
            paths.append(field)
    if priority is not None:
        task.priority = priority_value(priority)
        paths.append("priority")
    if due_time is not None:
        task.due_time.CopyFrom(_timestamp(due_time))
        paths.append("due_time")
    for field in clear:
        if field not in CLEARABLE_FIELDS:
            raise ValueError(f"cannot clear {field!r}: only {', '.join(CLEARABLE_FIELDS)}")
        if field in paths:
            raise ValueError(f"{field} is both set and cleared")
        paths.append(field)
    if not paths:
        raise ValueError("nothing to update: pass at least one of title, description, completed, ...")
    return pb.UpdateTaskRequest(task=task, update_mask=field_mask_pb2.FieldMask(paths=paths))
