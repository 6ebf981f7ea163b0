"""beat leases, beat entries, rate limits

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Generated from pgq.schema by Alembic autogenerate against a database at 0002, then hand-checked
(formatting only; nothing hand-written). ``pgq.beat_leases`` elects the one beat that schedules,
``pgq.beat_entries`` holds each periodic entry's cursor, ``pgq.rate_limits`` one GCRA cursor per
rate-limited task name. All three are new and empty, so upgrade and downgrade are instant.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "beat_entries",
        sa.Column("scheduler", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("schedule", sa.Text(), nullable=False),
        sa.Column("anchor_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("total_runs", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("total_runs >= 0", name="beat_entries_total_runs_not_negative"),
        sa.PrimaryKeyConstraint("scheduler", "name", name="beat_entries_pkey"),
        schema="pgq",
    )
    op.create_table(
        "beat_leases",
        sa.Column("scheduler", sa.Text(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column(
            "acquired_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scheduler"),
        schema="pgq",
    )
    op.create_table(
        "rate_limits",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("interval_seconds", postgresql.DOUBLE_PRECISION(), nullable=False),
        sa.Column("next_slot_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("interval_seconds > 0", name="rate_limits_interval_positive"),
        sa.PrimaryKeyConstraint("name"),
        schema="pgq",
    )


def downgrade() -> None:
    op.drop_table("rate_limits", schema="pgq")
    op.drop_table("beat_leases", schema="pgq")
    op.drop_table("beat_entries", schema="pgq")
