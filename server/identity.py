"""The caller's identity for the current RPC: set by the auth interceptor, read by everything else."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as proven by a verified token."""

    user_id: str
    email: str | None = None
    name: str | None = None


class NoIdentityError(RuntimeError):
    """Code that needs a caller ran where no caller was authenticated (a bug: fail closed)."""


# grpcio (>= 1.60) runs each RPC, interceptors included, in a fresh contextvars.Context, so a value
# set here lives exactly as long as the call that set it.
_current: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("todo_identity", default=None)


def set_identity(identity: Identity) -> None:
    """Binds `identity` to the running RPC. Only the auth interceptor calls this."""
    _current.set(identity)


def current_identity() -> Identity:
    """The authenticated caller; raises NoIdentityError when there is none."""
    identity = _current.get()
    if identity is None:
        raise NoIdentityError("no authenticated caller in this context")
    return identity


def current_user_id() -> str:
    """The authenticated caller's user id; raises NoIdentityError when there is none."""
    return current_identity().user_id


def peek_identity() -> Identity | None:
    """The caller if one is authenticated, else None: for logging, never for access decisions."""
    return _current.get()
