"""Python client for todo.v1.TaskService (`TaskClient`) and the `todo` CLI; the stubs live in `todo.v1`.

The names below are imported when first used, not with the package: the `todo` CLI (client.cli) must set
gRPC's log verbosity before anything imports grpc, which reads it once, at import."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_ERRORS = (
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "InvalidArgument",
    "NotFound",
    "OutcomeUnknown",
    "PermissionDenied",
    "ResourceExhausted",
    "TaskServiceError",
    "Unauthenticated",
    "Unavailable",
)
_MODULE_OF = {
    "AsyncTaskClient": "client.async_task_client",
    "Connection": "client.connectivity",
    "TaskClient": "client.task_client",
    **dict.fromkeys(_ERRORS, "client.errors"),
}
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


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
