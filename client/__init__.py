"""Python client for todo.v1.TaskService (`TaskClient`) and the `todo` CLI; the stubs live in `todo.v1`."""

from client.async_task_client import AsyncTaskClient
from client.connectivity import Connection
from client.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    PermissionDenied,
    ResourceExhausted,
    TaskServiceError,
    Unauthenticated,
    Unavailable,
)
from client.task_client import TaskClient

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncTaskClient",
    "Connection",
    "DeadlineExceeded",
    "InvalidArgument",
    "NotFound",
    "OutcomeUnknown",
    "PermissionDenied",
    "ResourceExhausted",
    "TaskClient",
    "TaskServiceError",
    "Unauthenticated",
    "Unavailable",
]
