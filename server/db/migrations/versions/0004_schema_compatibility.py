"""Record which older releases can still run on the schema, so that one restarting during a rolling deploy
(after the new release migrated) serves instead of refusing a schema it does not know.

Revision ID: 0004
Revises: 0003

Every migration names, as `oldest_release`, the oldest revision whose code still runs correctly on the
schema it leaves (columns it adds are nullable or defaulted, nothing the older code reads is dropped or
changes meaning). `todo-server migrate` stores the newest migration's in schema_compatibility
(server/db/schema.py). Releases before this one cannot read it: they still refuse any schema ahead of them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
# A new table only: 0003's code never reads it.
oldest_release = "0003"


def upgrade() -> None:
    op.create_table(
        "schema_compatibility",
        sa.Column("oldest_release", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("oldest_release"),
    )


def downgrade() -> None:
    op.drop_table("schema_compatibility")
