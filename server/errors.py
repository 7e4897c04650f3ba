"""Domain errors: raised anywhere below the servicer, turned into gRPC statuses in one place (status.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: `field` is its path in the request message, `description` says the fix."""

    field: str
    description: str


class TodoError(Exception):
    """Base of every error a caller may see. `message` is safe to send: no SQL, tokens or internals."""

    reason: str = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(TodoError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid request: {summary}")

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class Unauthenticated(TodoError):
    """No valid token. `reason` is TOKEN_MISSING, TOKEN_MALFORMED, TOKEN_EXPIRED or TOKEN_INVALID."""


class PermissionDenied(TodoError):
    """The caller is known but the resource is not theirs."""

    reason = "RESOURCE_NOT_OWNED"


class NotFound(TodoError):
    """The caller's own resource does not exist."""

    reason = "TASK_NOT_FOUND"


REQUEST_ID_REUSED = "REQUEST_ID_REUSED"


class AlreadyExists(TodoError):
    """A create conflicts with what is stored: its request_id already made a task from a different request."""

    reason = REQUEST_ID_REUSED


class Aborted(TodoError):
    """A concurrent change won; re-read and retry."""

    reason = "ETAG_MISMATCH"


class Unavailable(TodoError):
    """A dependency (the database, the issuer's keys) is not ready right now; retrying later may succeed.
    Nothing was written, or (a CreateTask with a request_id, reason COMMIT_OUTCOME_UNKNOWN) a retry with that
    request_id returns what was: clients retry it without asking."""

    reason = "DATABASE_UNAVAILABLE"


class ResourceExhausted(TodoError):
    """The caller holds more of a bounded resource than it may; it can try again once its other calls end."""


COMMIT_OUTCOME_UNKNOWN = "COMMIT_OUTCOME_UNKNOWN"


class CommitOutcomeUnknown(TodoError):
    """The connection to the database was lost during the COMMIT: the write may or may not have been saved.
    Not UNAVAILABLE, which clients retry blindly: a retried update or delete would then fail on its own change."""

    reason = COMMIT_OUTCOME_UNKNOWN


class DeadlineExceeded(TodoError):
    """The caller's deadline passed before the work was done; nothing was written."""

    reason = "DEADLINE_EXCEEDED"
