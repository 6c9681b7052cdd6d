"""The tasks table.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("guid", sa.String(255), primary_key=True),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cell_id", sa.String(255), nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("first_completed_at", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("result", sa.Text, nullable=False, server_default=""),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_index("tasks_domain_idx", "tasks", ["domain"])
    op.create_index("tasks_state_idx", "tasks", ["state"])
    op.create_index("tasks_cell_id_idx", "tasks", ["cell_id"])
    op.create_index("tasks_created_idx", "tasks", ["created_at", "guid"])


def downgrade() -> None:
    op.drop_table("tasks")
