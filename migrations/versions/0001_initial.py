"""initial schema: tasks and workers

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Generated from pgq.schema by Alembic autogenerate, then hand-checked. Hand-written additions:
the storage parameters of the hot table and the trigger that wakes idle workers.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), server_default=sa.text("'celery'"), nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'PENDING'"), nullable=False),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "run_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "args",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "kwargs",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "options",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("retries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("rescues", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("parent_id", sa.Text(), nullable=True),
        sa.Column("root_id", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state <> ''", name="tasks_state_not_empty"),
        sa.CheckConstraint(
            "state NOT IN ('PENDING', 'RETRY')"
            " OR (lease_expires_at IS NULL AND finished_at IS NULL)",
            name="tasks_waiting_is_unclaimed",
        ),
        sa.CheckConstraint(
            "finished_at IS NULL OR lease_expires_at IS NULL", name="tasks_finished_holds_no_lease"
        ),
        sa.CheckConstraint(
            "lease_expires_at IS NULL OR worker IS NOT NULL", name="tasks_lease_has_worker"
        ),
        sa.CheckConstraint("priority BETWEEN 0 AND 255", name="tasks_priority_range"),
        sa.CheckConstraint("retries >= 0 AND rescues >= 0", name="tasks_counts_not_negative"),
        sa.PrimaryKeyConstraint("id"),
        schema="pgq",
    )
    op.create_index(
        "tasks_claim_idx",
        "tasks",
        ["queue", "priority", "run_at"],
        unique=False,
        schema="pgq",
        postgresql_where=sa.text("state IN ('PENDING', 'RETRY')"),
    )
    op.create_index(
        "tasks_finished_idx",
        "tasks",
        ["finished_at"],
        unique=False,
        schema="pgq",
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_index(
        "tasks_idempotency_key_idx",
        "tasks",
        ["idempotency_key"],
        unique=True,
        schema="pgq",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "tasks_lease_idx",
        "tasks",
        ["lease_expires_at"],
        unique=False,
        schema="pgq",
        postgresql_where=sa.text("lease_expires_at IS NOT NULL"),
    )
    # Every task row is written three times (insert, claim, finish) and then deleted by pruning,
    # so pgq.tasks churns far more than it grows. fillfactor 80 leaves room on each page for the
    # new row version, so an update usually stays on the same page (fewer pages dirtied, HOT when
    # no indexed column changes, e.g. update_state). Autovacuum is told to visit after 2% of the
    # rows changed instead of 20%, and not to nap between pages, so dead versions are reclaimed
    # before the claim index fills up with them.
    op.execute(
        "ALTER TABLE pgq.tasks SET ("
        " fillfactor = 80,"
        " autovacuum_vacuum_scale_factor = 0.02,"
        " autovacuum_vacuum_insert_scale_factor = 0.05,"
        " autovacuum_analyze_scale_factor = 0.02,"
        " autovacuum_vacuum_cost_delay = 0)"
    )
    # NOTIFY is a wake-up hint for idle workers. A statement-level trigger covers every way a task
    # can be inserted (delay(), a batch, the caller's own transaction, a hand-written INSERT) and
    # sends one notification per queue per statement; PostgreSQL folds identical notifications of
    # one transaction into one, and delivers none if the transaction rolls back. Rows that are not
    # due yet wake nobody: workers find them by polling.
    op.execute(
        """
        CREATE FUNCTION pgq.wake_workers() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('pgq_tasks', queue)
            FROM (SELECT DISTINCT queue FROM new_rows WHERE run_at <= now()) AS due;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER tasks_wake_workers AFTER INSERT ON pgq.tasks"
        " REFERENCING NEW TABLE AS new_rows"
        " FOR EACH STATEMENT EXECUTE FUNCTION pgq.wake_workers()"
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column(
            "task_names",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_heartbeat_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("tasks_done", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("concurrency > 0", name="workers_concurrency_positive"),
        sa.PrimaryKeyConstraint("id"),
        schema="pgq",
    )


def downgrade() -> None:
    op.drop_table("workers", schema="pgq")
    op.drop_index(
        "tasks_lease_idx",
        table_name="tasks",
        schema="pgq",
        postgresql_where=sa.text("lease_expires_at IS NOT NULL"),
    )
    op.drop_index(
        "tasks_idempotency_key_idx",
        table_name="tasks",
        schema="pgq",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_index(
        "tasks_finished_idx",
        table_name="tasks",
        schema="pgq",
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.drop_index(
        "tasks_claim_idx",
        table_name="tasks",
        schema="pgq",
        postgresql_where=sa.text("state IN ('PENDING', 'RETRY')"),
    )
    op.execute("DROP TRIGGER tasks_wake_workers ON pgq.tasks")
    op.execute("DROP FUNCTION pgq.wake_workers()")
    op.drop_table("tasks", schema="pgq")
