"""Long-running processes: desired LRPs, actual LRPs (with evacuating copies), domains.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "desired_lrps",
        sa.Column("process_guid", sa.String(255), primary_key=True),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("instances", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_index("desired_lrps_domain_idx", "desired_lrps", ["domain"])
    op.create_table(
        "actual_lrps",
        sa.Column("process_guid", sa.String(255), primary_key=True),
        sa.Column("instance_index", sa.Integer, primary_key=True),
        sa.Column("evacuating", sa.Boolean, primary_key=True),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("instance_guid", sa.String(255), nullable=False, server_default=""),
        sa.Column("cell_id", sa.String(255), nullable=False, server_default=""),
        sa.Column("crash_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("crash_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("last_crashed_at", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("since", sa.BigInteger, nullable=False),
        sa.Column("placement_error", sa.Text, nullable=False, server_default=""),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_index("actual_lrps_domain_idx", "actual_lrps", ["domain"])
    op.create_index("actual_lrps_cell_id_idx", "actual_lrps", ["cell_id"])
    op.create_table(
        "domains",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("domains")
    op.drop_table("actual_lrps")
    op.drop_table("desired_lrps")
