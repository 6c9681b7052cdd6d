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
    # A copy of the definition's, for the converger, which decides on columns only.
    sa.Column("completion_callback_url", sa.Text, nullable=False, server_default=""),
    # The form the definition is written in: the current one (store.WIRE_FORM) is
    # served to the API as it is, with the lifecycle columns spliced on.
    sa.Column("definition_form", sa.String(64), nullable=False, server_default=""),
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

desired_lrps = sa.Table(
    "desired_lrps",
    metadata,
    sa.Column("process_guid", sa.String(255), primary_key=True),
    sa.Column("domain", sa.String(255), nullable=False),
    # The DesiredLRP as JSON, less the columns below: routes and annotation included.
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("instances", sa.Integer, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    # Bumped by every change; the compare in compare-and-swap.
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Index("desired_lrps_domain_idx", "domain"),
)

actual_lrps = sa.Table(
    "actual_lrps",
    metadata,
    # One row per instance, and one more while that instance's cell evacuates it.
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
    sa.Index("actual_lrps_domain_idx", "domain"),
    sa.Index("actual_lrps_cell_id_idx", "cell_id"),
)

domains = sa.Table(
    "domains",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    # Fresh until then (nanoseconds); 0: fresh forever.
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)

counters = sa.Table(
    "counters",
    metadata,
    # Numbers handed out once each, never again, not even after deletes: a
    # sequence that SQLite lacks. Bumped inside the transaction that uses the value.
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

TES_TASK_SEQ = "tes_tasks.seq"
"""The counter row (seeded at 0 by migration 0004) that numbers TES tasks."""

tes_tasks = sa.Table(
    "tes_tasks",
    metadata,
    # GA4GH TES tasks. Unlike Tasks they stay after finishing, listable, until pruned.
    sa.Column("id", sa.String(255), primary_key=True),
    # Creation order, from the TES_TASK_SEQ counter: lists go newest first by it and
    # a page token names the last seq seen, so pages do not shift.
    sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
    # The task's name ("" when it has none), for prefix search; PostgreSQL's
    # text_pattern_ops lets LIKE 'prefix%' use the index whatever the collation.
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    # Bumped by every change; the compare in compare-and-swap.
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # The whole TesTask as the codec encodes it, logs included: the task of record.
    sa.Column("document", sa.Text, nullable=False),
    sa.Index("tes_tasks_name_idx", "name", postgresql_ops={"name": "text_pattern_ops"}),
    sa.Index("tes_tasks_state_idx", "state"),
)

tes_task_tags = sa.Table(
    "tes_task_tags",
    metadata,
    # A copy of each task's tags, one row per key, so tag filters run in SQL and a
    # page holds page_size matching tasks. The document stays the record.
    sa.Column(
        "task_id",
        sa.String(255),
        sa.ForeignKey("tes_tasks.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index("tes_task_tags_key_value_idx", "key", "value"),
)
