"""Add what a CreateTask with a request_id asked for, so that the request_id reused for another task is refused.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
# A nullable column: 0001's code inserts NULL there, which a retry does not compare.
oldest_release = "0001"


def upgrade() -> None:
    # Nullable, no default: instant on PostgreSQL, and replicas still on 0001 keep inserting (NULL: not compared).
    op.add_column("tasks", sa.Column("request_fingerprint", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:  # SQLite drops a column only by copying the table
        batch.drop_column("request_fingerprint")
