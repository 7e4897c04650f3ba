"""The running call's deadline, so the data layer can stop waiting for the database once the caller gave up.

Set by DeadlineInterceptor from the gRPC deadline; read by `server.db.connections` as plain seconds, so the data
layer still never sees gRPC. Like the identity, it lives in the call's own contextvars.Context.

The server's drain (TodoServer.stop) bounds every call the same way: once it has begun, a call's database work
ends at its own deadline or at the drain's end, whichever is sooner. grpcio cancels the calls still running when
its grace ends, and the client is told UNAVAILABLE (retried elsewhere): the drain ends a little earlier, so
that no COMMIT is still running then, to be saved after the caller was told nothing was.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable

_expires_at: contextvars.ContextVar[float | None] = contextvars.ContextVar("todo_call_deadline", default=None)
# Process-wide (one server per process, as `todo-server` runs, one per worker process with --workers) and never
# undone: the process exits once the drain is over.
_drain_ends_at: float | None = None
_drain_listeners: list[Callable[[], None]] = []


def set_call_deadline(seconds_remaining: float) -> None:
    """Binds the running call's deadline. Only DeadlineInterceptor calls this."""
    _expires_at.set(time.monotonic() + seconds_remaining)


def begin_drain(seconds: float) -> None:
    """Every call's database work, in flight or to come, ends within `seconds` from now. Only TodoServer.stop
    calls this."""
    global _drain_ends_at
    _drain_ends_at = time.monotonic() + max(0.0, seconds)
    for listener in list(_drain_listeners):
        listener()


def on_drain(listener: Callable[[], None]) -> None:
    """Has `listener` called (on the stopping thread) when the drain begins."""
    _drain_listeners.append(listener)


def drain_ends_at() -> float | None:
    """When the server's drain ends (time.monotonic()); None until it begins."""
    return _drain_ends_at


def sooner(call_expires_at: float | None, drain_ends_at: float | None) -> float | None:
    """The sooner of a call's deadline and the drain's end (time.monotonic()); None when there is neither."""
    if drain_ends_at is None:
        return call_expires_at
    return drain_ends_at if call_expires_at is None or drain_ends_at < call_expires_at else call_expires_at


def expires_at() -> float | None:
    """When the running call must be done with the database (time.monotonic()): its deadline or the drain's
    end, whichever is sooner; None when there is neither."""
    return sooner(_expires_at.get(), _drain_ends_at)


def remaining_seconds() -> float | None:
    """Seconds left before `expires_at()` (negative once passed); None when there is no limit."""
    at = expires_at()
    return None if at is None else at - time.monotonic()


def draining_first() -> bool:
    """Whether the drain's end, not the call's own deadline, is what `expires_at()` is: the call ran out of
    time because the server is stopping, and a retry elsewhere is what the caller needs."""
    call, drain = _expires_at.get(), _drain_ends_at
    return drain is not None and (call is None or drain < call)
