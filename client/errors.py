"""The errors a TaskClient raises: one class per status code, carrying the server's google.rpc details."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class TaskServiceError(Exception):
    """A call failed. `code` is the gRPC status, `reason` the ErrorInfo reason (if the server sent one),
    `violations` the BadRequest field violations as {field: description}. From create_task, `request_id`
    is the one the request carried: create again with it to retry without making a second task."""

    request_id: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        reason: str | None = None,
        violations: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.violations = violations or {}

    def __str__(self) -> str:
        details = "; ".join(f"{field}: {text}" for field, text in self.violations.items())
        # todo-server's message already lists them; another server's may not.
        return f"{self.message} ({details})" if details and details not in self.message else self.message


class InvalidArgument(TaskServiceError):
    """The request is wrong (see `violations`); sending it again unchanged fails again."""


class Unauthenticated(TaskServiceError):
    """No valid token; `reason` is TOKEN_MISSING, TOKEN_MALFORMED, TOKEN_EXPIRED or TOKEN_INVALID."""


class PermissionDenied(TaskServiceError):
    """The name points at another user's tasks."""


class NotFound(TaskServiceError):
    """The caller has no task by that name."""


class AlreadyExists(TaskServiceError):
    """create_task's `request_id` already made a task from a different request (reason REQUEST_ID_REUSED): a
    new task needs a new request_id. Only a retry of the same request returns the first task."""


class Aborted(TaskServiceError):
    """The `etag` sent is stale: someone changed the task since it was read. Read it again."""


class Unavailable(TaskServiceError):
    """The server (or its database) cannot be reached, even after the client's bounded retries. With a
    `reason` (the server's own word) nothing was written, except for a create_task, which may have been saved
    (reason COMMIT_OUTCOME_UNKNOWN): retry it with the same `request_id`. Without one, the connection broke
    and an update_task or delete_task may have been done before it did: read the task back before writing
    again."""


class OutcomeUnknown(TaskServiceError):
    """The server lost its database connection while saving (reason COMMIT_OUTCOME_UNKNOWN): the change may
    have been saved. Read the task back before sending the write again; a create_task may be sent again with
    the same request_id. Not retried by the channel, as a retried update would fail on its own change."""


class ResourceExhausted(TaskServiceError):
    """The caller holds too much: `reason` TASK_LIMIT_REACHED (as many tasks as one user may keep: delete some
    first), CALLER_CALLS_EXHAUSTED (too many calls in flight) or ANSWER_BUFFER_EXHAUSTED (too many answers not
    yet read): retry once some calls have ended."""


class DeadlineExceeded(TaskServiceError):
    """The call did not finish within its timeout."""


_CLASSES: dict[grpc.StatusCode, type[TaskServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}
COMMIT_OUTCOME_UNKNOWN = "COMMIT_OUTCOME_UNKNOWN"


def from_rpc_error(error: grpc.RpcError) -> TaskServiceError:
    """The TaskServiceError for a failed call, with the ErrorInfo reason and BadRequest violations unpacked."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    message: str = error.details() or code.name  # type: ignore[attr-defined]
    reason: str | None = None
    violations: dict[str, str] = {}
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
    if code == grpc.StatusCode.UNKNOWN and reason == COMMIT_OUTCOME_UNKNOWN:
        # Only the server's own word: UNKNOWN also comes from proxies and broken streams, about any call.
        return OutcomeUnknown(message, code=code, reason=reason, violations=violations)
    return _CLASSES.get(code, TaskServiceError)(message, code=code, reason=reason, violations=violations)
