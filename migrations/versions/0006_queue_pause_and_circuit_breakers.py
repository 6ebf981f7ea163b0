"""Queue pause/resume and circuit breakers (issue 21)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

``pgq.queue_pauses`` holds one row per paused queue (resume deletes it); the claim statement
leaves those queues out. ``pgq.circuit_breakers`` holds one row per task name with a breaker:
its state (closed, open, half_open), its limits, the times of its recent failures and the id of
the one task a half-open breaker let through. Both tables are new and empty, so upgrade and
downgrade are instant. Hand-written: ``pgq.queue_stats`` gains a ``paused`` column (last, so
``CREATE OR REPLACE`` keeps the view's grants) and lists a paused queue that has no task yet.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COUNTS = """
       count(*) FILTER (WHERE state IN ('PENDING', 'RETRY') AND run_at <= now()) AS waiting,
       count(*) FILTER (WHERE state IN ('PENDING', 'RETRY') AND run_at > now()) AS scheduled,
       count(*) FILTER (WHERE lease_expires_at IS NOT NULL) AS running,
       count(*) FILTER (WHERE state = 'SUCCESS') AS succeeded,
       count(*) FILTER (WHERE state = 'FAILURE') AS failed,
       count(*) FILTER (WHERE state = 'REVOKED') AS revoked,
       count(*) AS total,
       extract(epoch FROM now() - min(run_at) FILTER (
           WHERE state IN ('PENDING', 'RETRY') AND run_at <= now()))::double precision
           AS oldest_waiting_seconds,
       count(*) FILTER (WHERE finished_at > now() - interval '1 minute') AS finished_last_minute,
       count(*) FILTER (WHERE finished_at > now() - interval '5 minutes')
           AS finished_last_5_minutes
"""

# A paused queue with no task yet still gets a row (all counts 0), so pausing before first use
# shows up where operators look.
QUEUE_STATS_WITH_PAUSED = f"""
CREATE OR REPLACE VIEW pgq.queue_stats AS
SELECT COALESCE(s.queue, p.queue) AS queue,
       COALESCE(s.waiting, 0) AS waiting, COALESCE(s.scheduled, 0) AS scheduled,
       COALESCE(s.running, 0) AS running, COALESCE(s.succeeded, 0) AS succeeded,
       COALESCE(s.failed, 0) AS failed, COALESCE(s.revoked, 0) AS revoked,
       COALESCE(s.total, 0) AS total, s.oldest_waiting_seconds,
       COALESCE(s.finished_last_minute, 0) AS finished_last_minute,
       COALESCE(s.finished_last_5_minutes, 0) AS finished_last_5_minutes,
       p.queue IS NOT NULL AS paused
FROM (SELECT queue, {_COUNTS} FROM pgq.tasks GROUP BY queue) AS s
FULL JOIN pgq.queue_pauses AS p ON p.queue = s.queue
"""

QUEUE_STATS_0002 = f"""
CREATE VIEW pgq.queue_stats AS
SELECT queue, {_COUNTS}
FROM pgq.tasks
GROUP BY queue
"""


def upgrade() -> None:
    op.create_table(
        "queue_pauses",
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column(
            "paused_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("paused_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("queue"),
        schema="pgq",
    )
    op.create_table(
        "circuit_breakers",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'closed'"), nullable=False),
        sa.Column("failure_threshold", sa.Integer(), nullable=False),
        sa.Column("window_seconds", postgresql.DOUBLE_PRECISION(), nullable=False),
        sa.Column("cooldown_seconds", postgresql.DOUBLE_PRECISION(), nullable=False),
        sa.Column(
            "recent_failures",
            postgresql.ARRAY(sa.DateTime(timezone=True)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reopens_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("probe_task_id", sa.Text(), nullable=True),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("transitions", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("cooldown_seconds >= 0", name="circuit_breakers_cooldown_not_negative"),
        sa.CheckConstraint("failure_threshold > 0", name="circuit_breakers_failures_positive"),
        sa.CheckConstraint(
            "state IN ('closed', 'open', 'half_open')", name="circuit_breakers_state_known"
        ),
        sa.CheckConstraint("window_seconds > 0", name="circuit_breakers_window_positive"),
        sa.PrimaryKeyConstraint("name"),
        schema="pgq",
    )
    op.create_index(
        "circuit_breakers_not_closed_idx",
        "circuit_breakers",
        ["name"],
        unique=False,
        schema="pgq",
        postgresql_where=sa.text("state <> 'closed'"),
    )
    op.execute(QUEUE_STATS_WITH_PAUSED)


def downgrade() -> None:
    op.execute("DROP VIEW pgq.queue_stats")
    op.execute(QUEUE_STATS_0002)
    op.drop_index(
        "circuit_breakers_not_closed_idx",
        table_name="circuit_breakers",
        schema="pgq",
        postgresql_where=sa.text("state <> 'closed'"),
    )
    op.drop_table("circuit_breakers", schema="pgq")
    op.drop_table("queue_pauses", schema="pgq")
