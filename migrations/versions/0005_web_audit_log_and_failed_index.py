"""pgq web: the audit log, and partial indexes on dead tasks and on task families

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

Generated from pgq.schema by Alembic autogenerate against a database at 0004, then hand-checked;
the index is created by hand-written SQL (``IF NOT EXISTS``, see below).

- ``pgq.audit_log``: one row per action taken through ``pgq web`` (who, what, target, the ids
  or filter given, how many rows changed, when), written in the action's own transaction. New
  and empty: instant both ways.
- ``tasks_failed_idx`` on ``pgq.tasks (finished_at) INCLUDE (queue) WHERE state = 'FAILURE'``:
  the dashboard's dead-task groups, its FAILURE filter and ``pgq.dead_tasks`` read only dead rows
  through it instead of walking every finished row of ``tasks_finished_idx``, and its dead count
  per queue is an index-only scan (20,000 dead rows in a table of 1,010,000: 86 ms through the
  heap without ``queue`` included). It is partial on purpose: an
  enqueue, a claim and a success never write it (the row is not FAILURE), so the hot path pays
  nothing; only the rare write that makes a task dead (or retries one) adds or drops an entry.
- ``pgq.stats_minute``: tasks finished per minute, queue and final state, added to by each
  worker slot every few seconds (one upsert of what it counted in memory) and pruned after a
  day; the dashboard's series and last-hour counts read it instead of re-reading the finished
  rows (250 ms a read at 6,000 tasks/s). New and empty: instant both ways.
- ``tasks_parent_idx`` / ``tasks_root_idx`` on ``parent_id`` / ``root_id``, partial (``IS NOT
  NULL``): the task detail's children and workflow steps (without them: a full scan, 257 ms a
  detail page with 1,010,000 rows). A task enqueued on its own has neither (``root_id`` is the
  parent's root), so a plain enqueue never writes them; only workflow steps and tasks enqueued
  by tasks add an entry.
  No other index is added: the task browser sorts by ``id`` (version 7 ids sort by creation
  time) and by ``finished_at`` (``tasks_finished_idx``), reading a bounded number of rows per
  page, and the overview reads the partial claim and lease indexes and a one-hour window of
  ``tasks_finished_idx``.

Creating the index scans ``pgq.tasks`` once under a SHARE lock (enqueues wait for it; on a very
large table, create it by hand first with ``CREATE INDEX CONCURRENTLY`` under the same name and
definition, and this migration skips it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("rows", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("action <> ''", name="audit_log_action_not_empty"),
        sa.PrimaryKeyConstraint("id"),
        schema="pgq",
    )
    op.create_table(
        "stats_minute",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("minute", "queue", "state"),
        schema="pgq",
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS tasks_failed_idx ON pgq.tasks (finished_at) INCLUDE (queue)"
        " WHERE state = 'FAILURE'"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS tasks_parent_idx ON pgq.tasks (parent_id)"
        " WHERE parent_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS tasks_root_idx ON pgq.tasks (root_id) WHERE root_id IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS pgq.tasks_root_idx")
    op.execute("DROP INDEX IF EXISTS pgq.tasks_parent_idx")
    op.drop_index(
        "tasks_failed_idx",
        table_name="tasks",
        schema="pgq",
        postgresql_where=sa.text("state = 'FAILURE'"),
    )
    op.drop_table("stats_minute", schema="pgq")
    op.drop_table("audit_log", schema="pgq")
