"""Deduplication windows and periodic tasks editable at run time (issue 21)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Written by hand from pgq.schema and checked with Alembic's ``check`` (tests/migration).

- ``pgq.tasks.idempotency_expires_at``: the end of an idempotency key's deduplication window
  (``idempotency_ttl=``); NULL keeps today's rule (the key is held until the row is pruned).
  A nullable column without a default: instant, no table rewrite, no index change.
- ``pgq.beat_entries`` grows from a cursor per code-defined entry into the periodic tasks
  themselves: ``origin`` ('code' or 'runtime'), ``enabled``, a runtime entry's schedule
  (``every_seconds`` or ``cron``), ``args``, ``kwargs``, ``options``, ``queue`` and
  ``updated_at``; the cursor columns get defaults so that a
  plain ``INSERT`` of a runtime entry works. Existing rows become code entries (they were all
  written from code). The table holds one row per entry: instant both ways.
- Trigger ``beat_entries_changed``: any insert, delete or change of an entry's definition sends
  ``NOTIFY pgq_beat`` (payload: the scheduler), so the leading beat reloads within a second,
  also after a change made in SQL.

Downgrade drops the runtime entries (an older beat cannot run them) and the new columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
# The columns whose change the leading beat must hear about (not its own cursor moves).
_DEFINITION = "task, enabled, every_seconds, cron, args, kwargs, options, queue, origin"


def upgrade() -> None:
    op.add_column("tasks", sa.Column("idempotency_expires_at", _TS), schema="pgq")

    add = [
        sa.Column("origin", sa.Text(), server_default=sa.text("'runtime'"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("every_seconds", postgresql.DOUBLE_PRECISION()),
        sa.Column("cron", sa.Text()),
        sa.Column(
            "args", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column(
            "kwargs", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column(
            "options", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("queue", sa.Text()),
        sa.Column("updated_at", _TS, server_default=sa.text("now()"), nullable=False),
    ]
    for column in add:
        op.add_column("beat_entries", column, schema="pgq")
    # Every row before this revision was written by a beat from the app's code.
    op.execute("UPDATE pgq.beat_entries SET origin = 'code'")
    op.alter_column("beat_entries", "scheduler", server_default=sa.text("'default'"), schema="pgq")
    op.alter_column("beat_entries", "schedule", server_default=sa.text("''"), schema="pgq")
    op.alter_column("beat_entries", "anchor_at", server_default=sa.text("now()"), schema="pgq")
    op.alter_column("beat_entries", "last_due_at", server_default=sa.text("now()"), schema="pgq")
    checks = {
        "beat_entries_origin_known": "origin IN ('code', 'runtime')",
        "beat_entries_runtime_has_one_schedule": (
            "origin = 'code' OR num_nonnulls(every_seconds, cron) = 1"
        ),
        "beat_entries_every_positive": "every_seconds IS NULL OR every_seconds > 0",
        "beat_entries_arguments_shape": (
            "jsonb_typeof(args) = 'array' AND jsonb_typeof(kwargs) = 'object'"
            " AND jsonb_typeof(options) = 'object'"
        ),
        "beat_entries_names_not_empty": "name <> '' AND task <> ''",
    }
    for name, condition in checks.items():
        op.create_check_constraint(name, "beat_entries", condition, schema="pgq")

    # A row-level trigger (the payload names the scheduler); PostgreSQL folds identical
    # notifications of one transaction into one and sends none if it rolls back. The beat's
    # cursor moves (last_due_at, total_runs...) are not in the column list: they wake nobody.
    op.execute(
        """
        CREATE FUNCTION pgq.beat_entries_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('pgq_beat', left(COALESCE(NEW.scheduler, OLD.scheduler), 255));
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER beat_entries_changed"
        f" AFTER INSERT OR DELETE OR UPDATE OF {_DEFINITION} ON pgq.beat_entries"
        " FOR EACH ROW EXECUTE FUNCTION pgq.beat_entries_changed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER beat_entries_changed ON pgq.beat_entries")
    op.execute("DROP FUNCTION pgq.beat_entries_changed()")
    op.execute("DELETE FROM pgq.beat_entries WHERE origin = 'runtime'")
    for name in (
        "beat_entries_names_not_empty",
        "beat_entries_arguments_shape",
        "beat_entries_every_positive",
        "beat_entries_runtime_has_one_schedule",
        "beat_entries_origin_known",
    ):
        op.drop_constraint(name, "beat_entries", schema="pgq", type_="check")
    op.alter_column("beat_entries", "last_due_at", server_default=None, schema="pgq")
    op.alter_column("beat_entries", "anchor_at", server_default=None, schema="pgq")
    op.alter_column("beat_entries", "schedule", server_default=None, schema="pgq")
    op.alter_column("beat_entries", "scheduler", server_default=None, schema="pgq")
    for column in (
        "updated_at",
        "queue",
        "options",
        "kwargs",
        "args",
        "cron",
        "every_seconds",
        "enabled",
        "origin",
    ):
        op.drop_column("beat_entries", column, schema="pgq")
    op.drop_column("tasks", "idempotency_expires_at", schema="pgq")
