"""The owner scope: every statement on an OwnedByUser entity reads and writes only the caller's rows.

The one place where the caller's id (server/identity.py) meets SQL. Sessions get it through `enforce_on`;
reads without a Session (Database.owned_reads) through `scoped` and `with_owner`. Anything the scope cannot
reach, or a statement that brings its own owner, is refused rather than run unscoped.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, event
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria

from server.db.models import Base, OwnedByUser
from server.identity import current_user_id


class CrossUserWriteError(RuntimeError):
    """A flush tried to store a row owned by someone other than the caller (a bug: fail closed)."""


# The owner filter every ORM statement on an OwnedByUser entity gets: built once, with the owner as a bound
# parameter filled in per execution (below). A per-call closure would cost SQLAlchemy a fresh analysis of
# the criteria on every statement (about a quarter of a GetTask), for the same SQL.
SCOPE_PARAMETER = "todo_scope_owner_id"


@functools.cache
def _owner_criteria() -> tuple[Any, ...]:
    owned = [mapper.class_ for mapper in Base.registry.mappers if issubclass(mapper.class_, OwnedByUser)]
    return tuple(
        with_loader_criteria(cls, cls.owner_id == bindparam(SCOPE_PARAMETER), include_aliases=True)
        for cls in owned
    )


@functools.lru_cache(maxsize=256)
def scoped(statement: Any) -> Any:
    # Statements built once (the repository's lookups by id) stay the same object, and so does their
    # scoped copy: SQLAlchemy then finds its cache key memoized instead of recomputing it per call.
    return statement.options(*_owner_criteria())


class OwnerScopeError(RuntimeError):
    """A statement brought its own owner scope or many parameter sets, or is one the scope does not reach
    (a bug: fail closed)."""


def with_owner(parameters: Any) -> dict[str, Any]:
    """`parameters` plus the caller as the owner; raises NoIdentityError when no caller is authenticated."""
    user_id = current_user_id()  # never run a statement unscoped
    if not isinstance(parameters, Mapping) or SCOPE_PARAMETER in parameters:
        # executemany, or a caller naming the owner itself: neither is how this data layer reads rows.
        raise OwnerScopeError("refusing a statement that brings its own owner scope or many parameter sets")
    return {**parameters, SCOPE_PARAMETER: user_id}


def _scope_to_caller(state: ORMExecuteState) -> None:
    if state.is_column_load or state.is_relationship_load:
        return  # loads for rows already fetched through a scoped statement
    if not (state.is_select or state.is_update or state.is_delete):
        return
    parameters = with_owner(state.parameters or {})
    state.statement = scoped(state.statement)
    state.parameters = parameters


def _refuse_foreign_rows(session: Session, _flush_context: Any, _instances: Any) -> None:
    user_id = current_user_id()
    for row in (*session.new, *session.dirty, *session.deleted):
        if isinstance(row, OwnedByUser) and row.owner_id != user_id:
            raise CrossUserWriteError("refusing to write a row owned by another user")


def enforce_on(sessions: sessionmaker[Session]) -> None:
    """Scopes every statement of `sessions` to the caller, and refuses a flush of anyone else's rows."""
    event.listen(sessions, "do_orm_execute", _scope_to_caller)
    event.listen(sessions, "before_flush", _refuse_foreign_rows)
