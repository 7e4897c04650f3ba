"""Create the tasks table, its idempotency key and one index per ListTasks order.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
# The first schema: no release before it.
oldest_release = "0001"

_ORDER_INDEXES = {  # index name → sort key; every one ends in id so each ListTasks page is a range scan
    "ix_tasks_owner_create_time": "create_time",
    "ix_tasks_owner_update_time": "update_time",
    "ix_tasks_owner_due_time": "due_time",
    "ix_tasks_owner_title": "title",
    "ix_tasks_owner_priority": "priority",
}


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        # Naive UTC on both databases (server.db.models.UTCDateTime converts at the edge).
        sa.Column("due_time", sa.DateTime(), nullable=True),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.Column("complete_time", sa.DateTime(), nullable=True),
        sa.Column("request_id", sa.String(length=36), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner_id", "request_id", name="uq_tasks_owner_request_id"),
    )
    for name, key in _ORDER_INDEXES.items():
        op.create_index(name, "tasks", ["owner_id", key, "id"])


def downgrade() -> None:
    for name in _ORDER_INDEXES:
        op.drop_index(name, table_name="tasks")
    op.drop_table("tasks")
