"""Cell presence: which cells are alive, until when.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cells",
        sa.Column("cell_id", sa.String(255), primary_key=True),
        sa.Column("zone", sa.String(255), nullable=False, server_default=""),
        sa.Column("presence", sa.Text, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cells")
