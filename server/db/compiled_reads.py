"""A SELECT compiled once for one dialect, run on the driver connection with SQLAlchemy's own type handling.

SQLAlchemy's per-execution machinery (Session, ORM loading, execution context) cost a GetTask more than
everything else it does (docs/benchmarks.md). A read needs none of it: the SQL, the order of its
parameters and each column's conversion are fixed once the statement is compiled. This module knows nothing
about owners; session.py compiles only statements it has scoped to the caller, and runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class CompiledRead:
    compiled: SQLCompiler
    sql: str
    positional: bool
    bind_processors: Mapping[str, Callable[[Any], Any]]
    result_processors: tuple[_Processor, ...]

    @classmethod
    def of(cls, statement: Select[Any], dialect: Dialect) -> CompiledRead:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        bind_processors = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                bind_processors[name] = processor
        result_processors = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns
        )
        return cls(compiled, str(compiled), compiled.positional, bind_processors, result_processors)

    def binds(self, name: str) -> bool:
        return name in self.compiled.binds

    def arguments(self, parameters: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """The driver's arguments for `parameters`: each converted as its column's type says."""
        values = self.compiled.construct_params(dict(parameters))  # raises if one is missing
        for name, process in self.bind_processors.items():
            values[name] = process(values[name])
        return tuple(values[name] for name in self.compiled.positiontup or ()) if self.positional else values

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        """A driver row with each value converted as its column's type says (dates, booleans)."""
        return tuple(
            value if process is None else process(value)
            for value, process in zip(raw, self.result_processors, strict=True)
        )
