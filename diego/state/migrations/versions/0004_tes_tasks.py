"""GA4GH TES tasks: kept after they finish, listed newest first; their tags; counters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(counters, [{"name": "tes_tasks.seq", "value": 0}])
    op.create_table(
        "tes_tasks",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("document", sa.Text, nullable=False),
    )
    op.create_index(
        "tes_tasks_name_idx", "tes_tasks", ["name"], postgresql_ops={"name": "text_pattern_ops"}
    )
    op.create_index("tes_tasks_state_idx", "tes_tasks", ["state"])
    op.create_table(
        "tes_task_tags",
        sa.Column(
            "task_id",
            sa.String(255),
            sa.ForeignKey("tes_tasks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_index("tes_task_tags_key_value_idx", "tes_task_tags", ["key", "value"])


def downgrade() -> None:
    op.drop_table("tes_task_tags")
    op.drop_table("tes_tasks")
    op.drop_table("counters")
