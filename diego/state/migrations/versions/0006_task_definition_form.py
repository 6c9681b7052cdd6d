"""Which form each Task's definition is written in, so a current one can be served as is.

A definition written by the current models and codec is, byte for byte, the
request part of the Task's wire JSON: a read for the API splices the lifecycle
columns onto it instead of decoding and encoding it again. ``definition_form``
names the form (see diego.state.store.WIRE_FORM); rows written before this
column, or by other models, are decoded and encoded as before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("definition_form", sa.String(64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("definition_form")
