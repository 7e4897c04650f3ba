"""Faults injected into the server's PostgreSQL writes: a trigger on the tasks table that stalls or fails a
write at its statement or at its COMMIT, and the end of the backend that a stalled write runs on."""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from tests.faults.conftest import ScratchDatabase


class At(enum.Enum):
    """When the trigger fires: at the write's own statement, or at COMMIT (a deferred constraint trigger)."""

    STATEMENT = "CREATE TRIGGER todo_test_fault AFTER INSERT OR UPDATE OR DELETE ON tasks"
    COMMIT = (
        "CREATE CONSTRAINT TRIGGER todo_test_fault AFTER INSERT OR UPDATE OR DELETE ON tasks "
        "DEFERRABLE INITIALLY DEFERRED"
    )


# What the trigger does. Longer than any call's deadline: the test ends the stall, not the clock.
STALL = "PERFORM pg_sleep(60);"
# A sequence, not a table: nextval is not rolled back with the transaction it fails.
REFUSE_ONCE = (
    "IF nextval('todo_test_fault_count') = 1 THEN "
    "RAISE EXCEPTION 'injected fault' USING ERRCODE = 'serialization_failure'; END IF;"
)
REFUSE = "RAISE EXCEPTION 'injected fault' USING ERRCODE = 'serialization_failure';"


@contextmanager
def write_fault(scratch: ScratchDatabase, action: str, *, at: At) -> Iterator[None]:
    """Every write to the scratch database's tasks does `action` (STALL, REFUSE_ONCE, REFUSE) `at` its
    statement or its COMMIT, until the block ends."""
    engine = create_engine(scratch.url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("CREATE SEQUENCE todo_test_fault_count"))
            connection.execute(
                text(
                    "CREATE FUNCTION todo_test_fault() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN {action} RETURN NULL; END $$"
                )
            )
            connection.execute(text(f"{at.value} FOR EACH ROW EXECUTE FUNCTION todo_test_fault()"))
        yield
    finally:
        with engine.connect() as connection:
            connection.execute(text("DROP TRIGGER IF EXISTS todo_test_fault ON tasks"))
            connection.execute(text("DROP FUNCTION IF EXISTS todo_test_fault()"))
            connection.execute(text("DROP SEQUENCE IF EXISTS todo_test_fault_count"))
        engine.dispose()


def end_stalled_backend(scratch: ScratchDatabase, seconds: float = 10) -> None:
    """Ends the backend that sleeps in the STALL trigger, once one does: what a crash or failover does to
    the connection of the write in progress. Fails if none stalls within `seconds`."""
    deadline = time.monotonic() + seconds
    with scratch.admin.connect() as connection:
        while time.monotonic() < deadline:
            ended = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND wait_event = 'PgSleep'"
                ),
                {"name": scratch.name},
            ).all()
            if ended:
                return
            time.sleep(0.02)
    raise AssertionError(f"no write stalled in the trigger within {seconds}s")
