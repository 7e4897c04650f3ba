"""Floors: todo-server and the FastAPI app with their data layer answered from memory.

`python -m bench.floors todo-server ARGS...` runs todo-server (ARGS are its own) and
`python -m bench.floors fastapi ARGS...` runs bench.fastapi_app, each with TaskRepository.get remembering what
it read for a caller and task and answering that from then on: every part of a GetTask except the database.
Both stacks are cut at the same place, so (GetTask - floor) is what the data layer costs inside each server,
and the floors compare what each stack costs around it (docs/benchmarks.md, "Where a GetTask's time goes").
For measuring only: nothing here is ever part of todo-server.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from server.db.repository import TaskRepository
from server.identity import current_user_id
from server.tasks import TaskRecord


def _remember_reads() -> None:
    read = TaskRepository.get
    remembered: dict[tuple[str, str], TaskRecord] = {}

    def get(self: TaskRepository, *, task_id: str) -> TaskRecord:
        key = (current_user_id(), task_id)
        record = remembered.get(key)
        if record is None:
            record = remembered[key] = read(self, task_id=task_id)
        return record

    TaskRepository.get = get  # type: ignore[method-assign]


def _todo_server() -> int:
    from server.__main__ import main

    return main()


def _fastapi() -> int:
    from bench.fastapi_app import main

    main()
    return 0


_STACKS: dict[str, Callable[[], int]] = {"todo-server": _todo_server, "fastapi": _fastapi}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in _STACKS:
        print(f"usage: python -m bench.floors {{{'|'.join(_STACKS)}}} ARGS...", file=sys.stderr)
        return 2
    stack = _STACKS[sys.argv[1]]
    sys.argv = [f"{sys.argv[0]} {sys.argv[1]}", *sys.argv[2:]]
    _remember_reads()
    return stack()


if __name__ == "__main__":
    sys.exit(main())
