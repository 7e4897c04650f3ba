"""Count each owner's tasks in task_counts, kept by triggers on tasks: the per-user bound reads one row, exactly.

Revision ID: 0003
Revises: 0002

Triggers, not the server's code, keep the count: a replica still on 0002's code during a rolling deploy, or
an operator's SQL, writes tasks that are counted all the same. A task's owner never changes (the server
never changes it; a trigger refuses it), so inserts and deletes are all that move a count. An owner whose
last task goes loses their row: the table holds each owner's COUNT(*) and nothing of someone with no tasks.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
# A table and triggers: 0002's code counts with COUNT(*) and never writes task_counts; the triggers do.
oldest_release = "0002"

_OWNER_IS_FIXED = "tasks.owner_id never changes: insert the task under its new owner, then delete this one"

# SQLite: row triggers (it has no statement triggers); an UPSERT in a trigger needs SQLite >= 3.24 (2018).
_SQLITE = (
    """CREATE TRIGGER tasks_counted_on_insert AFTER INSERT ON tasks BEGIN
        INSERT INTO task_counts (owner_id, tasks) VALUES (NEW.owner_id, 1)
            ON CONFLICT (owner_id) DO UPDATE SET tasks = tasks + 1;
    END""",
    """CREATE TRIGGER tasks_counted_on_delete AFTER DELETE ON tasks BEGIN
        UPDATE task_counts SET tasks = tasks - 1 WHERE owner_id = OLD.owner_id;
        DELETE FROM task_counts WHERE owner_id = OLD.owner_id AND tasks = 0;
    END""",
    f"""CREATE TRIGGER tasks_keep_their_owner BEFORE UPDATE OF owner_id ON tasks
        WHEN NEW.owner_id IS NOT OLD.owner_id BEGIN
        SELECT RAISE(ABORT, '{_OWNER_IS_FIXED}');
    END""",
)
_SQLITE_DOWN = (
    "DROP TRIGGER tasks_keep_their_owner",
    "DROP TRIGGER tasks_counted_on_delete",
    "DROP TRIGGER tasks_counted_on_insert",
)

# PostgreSQL: statement triggers over the statement's rows (transition tables), one count change per owner
# per statement. Row triggers updated one owner's row once per task: a 20,000-row INSERT took 11 s, each
# update of a row the transaction already updated costing more than the last (0.17 s this way).
_POSTGRESQL = (
    """CREATE FUNCTION tasks_counted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO task_counts (owner_id, tasks)
                SELECT owner_id, count(*) FROM added GROUP BY owner_id ORDER BY owner_id
                ON CONFLICT (owner_id) DO UPDATE SET tasks = task_counts.tasks + excluded.tasks;
        ELSE
            UPDATE task_counts SET tasks = task_counts.tasks - gone.tasks
                FROM (SELECT owner_id, count(*) AS tasks FROM removed GROUP BY owner_id) AS gone
                WHERE task_counts.owner_id = gone.owner_id;
            DELETE FROM task_counts WHERE tasks = 0 AND owner_id IN (SELECT owner_id FROM removed);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER tasks_counted_on_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION tasks_counted()""",
    """CREATE TRIGGER tasks_counted_on_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS removed
        FOR EACH STATEMENT EXECUTE FUNCTION tasks_counted()""",
    f"""CREATE FUNCTION tasks_keep_their_owner() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{_OWNER_IS_FIXED}';
    END $$""",
    """CREATE TRIGGER tasks_keep_their_owner BEFORE UPDATE OF owner_id ON tasks
        FOR EACH ROW WHEN (NEW.owner_id IS DISTINCT FROM OLD.owner_id)
        EXECUTE FUNCTION tasks_keep_their_owner()""",
)
_POSTGRESQL_DOWN = (
    "DROP TRIGGER tasks_keep_their_owner ON tasks",
    "DROP FUNCTION tasks_keep_their_owner()",
    "DROP TRIGGER tasks_counted_on_delete ON tasks",
    "DROP TRIGGER tasks_counted_on_insert ON tasks",
    "DROP FUNCTION tasks_counted()",
)


def _on_this_database(sqlite: tuple[str, ...], postgresql: tuple[str, ...]) -> tuple[str, ...]:
    return postgresql if op.get_bind().dialect.name == "postgresql" else sqlite


def upgrade() -> None:
    op.create_table(
        "task_counts",
        sa.Column("owner_id", sa.String(length=128), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("owner_id"),
    )
    # Triggers first: on PostgreSQL, CREATE TRIGGER locks out writes to tasks until this migration commits,
    # so the count below misses no task committed meanwhile, and counts none twice.
    for statement in _on_this_database(_SQLITE, _POSTGRESQL):
        op.execute(statement)
    op.execute("INSERT INTO task_counts (owner_id, tasks) SELECT owner_id, count(*) FROM tasks GROUP BY owner_id")


def downgrade() -> None:
    for statement in _on_this_database(_SQLITE_DOWN, _POSTGRESQL_DOWN):
        op.execute(statement)
    op.drop_table("task_counts")
