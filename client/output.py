"""How the `todo` CLI shows tasks: an aligned table for people, proto JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC

from google.protobuf import json_format
from todo.v1 import task_service_pb2 as pb

SHORT_ID_LENGTH = 8


def task_id(task: pb.Task) -> str:
    return task.name.rsplit("/", 1)[-1]


def _local_time(task: pb.Task, field: str) -> str:
    if not task.HasField(field):
        return ""
    return getattr(task, field).ToDatetime(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M")


def _priority(task: pb.Task) -> str:
    return "" if task.priority == pb.PRIORITY_UNSPECIFIED else pb.Priority.Name(task.priority)[9:].lower()


def task_json(task: pb.Task) -> dict[str, object]:
    """The task as grpcurl would print it (proto field names), for scripts."""
    return json_format.MessageToDict(task, preserving_proto_field_name=True)


def dumps(value: object) -> str:
    return json.dumps(value, indent=2)


def table(tasks: Iterable[pb.Task]) -> str:
    """One aligned row per task: short id, done mark, priority, due time (local), title."""
    rows: list[tuple[str, ...]] = [("ID", "DONE", "PRIORITY", "DUE", "TITLE")]
    rows += [
        (
            task_id(t)[:SHORT_ID_LENGTH],
            "x" if t.completed else "",
            _priority(t),
            _local_time(t, "due_time"),
            t.title,
        )
        for t in tasks
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4]]) for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def details(task: pb.Task) -> str:
    """Every field of one task, one per line."""
    fields = [
        ("id", task_id(task)),
        ("name", task.name),
        ("title", task.title),
        ("description", task.description),
        ("done", "yes" if task.completed else "no"),
        ("priority", _priority(task) or "-"),
        ("due", _local_time(task, "due_time") or "-"),
        ("created", _local_time(task, "create_time")),
        ("updated", _local_time(task, "update_time")),
        ("completed", _local_time(task, "complete_time") or "-"),
        ("etag", task.etag),
    ]
    return "\n".join(f"{label + ':':<13}{value}" for label, value in fields)
