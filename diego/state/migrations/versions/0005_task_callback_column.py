"""A Task's completion_callback_url in a column of its own, for the converger.

The converger decides on a handful of a Task's fields, all columns but this one,
which was only in the definition: reading every definition to find it was most
of a pass over many Tasks. Existing rows take it from their definition.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("completion_callback_url", sa.Text, nullable=False, server_default="")
        )
    if op.get_bind().dialect.name == "postgresql":
        found = "definition::json ->> 'completion_callback_url'"
    else:
        found = "json_extract(definition, '$.completion_callback_url')"
    op.execute(f"UPDATE tasks SET completion_callback_url = COALESCE({found}, '')")


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("completion_callback_url")
