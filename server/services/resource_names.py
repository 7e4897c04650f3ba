"""Parsing AIP resource names, and refusing any that point outside the caller's own `users/{user_id}`."""

from __future__ import annotations

import re

from server.errors import InvalidArgument, PermissionDenied
from server.identity import current_user_id

ME = "me"
_PARENT = re.compile(r"users/([^/]+)")
_TASK_NAME = re.compile(r"users/([^/]+)/tasks/([^/]+)")
TASK_ID = re.compile(r"[0-9a-f]{32}")


def _require_caller(user_segment: str) -> str:
    # Decided before any lookup, so the reply never tells whether another user's task exists (AIP-211).
    user_id = current_user_id()
    if user_segment not in (ME, user_id):
        raise PermissionDenied("you can only reach your own tasks, under users/me")
    return user_id


def parse_parent(parent: str, *, field: str = "parent") -> str:
    """The caller's user id for `users/{user_id}` or `users/me`."""
    match = _PARENT.fullmatch(parent)
    if match is None:
        raise InvalidArgument.field(field, f"must be 'users/me' or 'users/{{user_id}}', got {parent[:80]!r}")
    return _require_caller(match.group(1))


def parse_task_name(name: str, *, field: str = "name") -> str:
    """The task id in `users/{user_id}/tasks/{task_id}` (or `users/me/tasks/{task_id}`)."""
    match = _TASK_NAME.fullmatch(name)
    if match is None:
        raise InvalidArgument.field(field, f"must be 'users/{{user_id}}/tasks/{{task_id}}', got {name[:120]!r}")
    _require_caller(match.group(1))
    task_id = match.group(2)
    if TASK_ID.fullmatch(task_id) is None:
        raise InvalidArgument.field(field, "the task id is not one this service makes (32 hex digits)")
    return task_id


def task_name(owner_id: str, task_id: str) -> str:
    return f"users/{owner_id}/tasks/{task_id}"
