"""The running call's deadline, so the data layer can stop waiting for the database once the caller gave up.

Set by DeadlineInterceptor from the gRPC deadline; read by `server.db.connections` as plain seconds, so the data
layer still never sees gRPC. Like the identity, it lives in the call's own contextvars.Context.
"""

from __future__ import annotations

import contextvars
import time

_expires_at: contextvars.ContextVar[float | None] = contextvars.ContextVar("todo_call_deadline", default=None)


def set_call_deadline(seconds_remaining: float) -> None:
    """Binds the running call's deadline. Only DeadlineInterceptor calls this."""
    _expires_at.set(time.monotonic() + seconds_remaining)


def remaining_seconds() -> float | None:
    """Seconds left before the running call's deadline (negative once passed); None when it has none."""
    expires_at = _expires_at.get()
    return None if expires_at is None else expires_at - time.monotonic()
