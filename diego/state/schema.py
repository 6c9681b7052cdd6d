"""The tables of the BBS, as SQLAlchemy Core metadata.

Migrations under ``migrations/versions`` create these tables; a test checks that
the migrated schema and this metadata agree, so neither drifts.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

tasks = sa.Table(
    "tasks",
    metadata,
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
    # The TaskCreateRequest as JSON, less nothing: it is the definition of record.
    sa.Column("definition", sa.Text, nullable=False),
    # Bumped by every change; the compare in compare-and-swap.
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Index("tasks_domain_idx", "domain"),
    sa.Index("tasks_state_idx", "state"),
    sa.Index("tasks_cell_id_idx", "cell_id"),
    # Listing walks Tasks oldest first by (created_at, guid), page by page.
    sa.Index("tasks_created_idx", "created_at", "guid"),
)

cells = sa.Table(
    "cells",
    metadata,
    sa.Column("cell_id", sa.String(255), primary_key=True),
    sa.Column("zone", sa.String(255), nullable=False, server_default=""),
    # The CellPresence as JSON: what the cell serves, its capacity, how to reach it.
    sa.Column("presence", sa.Text, nullable=False),
    # A presence not renewed by then means the cell is gone.
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)
