"""operations: failure history and views

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Generated from pgq.schema by Alembic autogenerate (the ``failures`` column), then hand-checked.
Hand-written additions: the views operators query (``pgq.queue_stats``, ``pgq.dead_tasks``,
``pgq.running_tasks``), which autogenerate does not see. A later migration that changes a column
these views read must drop and recreate them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# One row per queue that has any task. "waiting" is due now and unclaimed (the queue depth),
# "scheduled" waits for a future run_at (countdown, eta, retry back-off), "running" holds a lease.
# Throughput windows count finished_at, so they are served by the partial tasks_finished_idx.
QUEUE_STATS = """
CREATE VIEW pgq.queue_stats AS
SELECT queue,
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
FROM pgq.tasks
GROUP BY queue
"""

# The dead-letter list: tasks that ended in FAILURE, with the stored exception split into its
# type and message (Celery stores the message as the exception's args, a JSON array).
DEAD_TASKS = """
CREATE VIEW pgq.dead_tasks AS
SELECT id, name, queue,
       result ->> 'exc_type' AS exc_type,
       CASE jsonb_typeof(result -> 'exc_message')
           WHEN 'array' THEN (SELECT string_agg(m #>> '{}', ', ')
                              FROM jsonb_array_elements(result -> 'exc_message') AS m)
           ELSE result ->> 'exc_message'
       END AS exc_message,
       retries, rescues,
       jsonb_array_length(failures) AS earlier_failures,
       created_at, started_at, finished_at, worker, args, kwargs, traceback
FROM pgq.tasks
WHERE state = 'FAILURE'
"""

# Tasks a worker holds right now (a lease is set), with how long they have been running.
RUNNING_TASKS = """
CREATE VIEW pgq.running_tasks AS
SELECT id, name, queue, state, worker, started_at,
       extract(epoch FROM now() - started_at)::double precision AS runtime_seconds,
       lease_expires_at, lease_expires_at < now() AS lease_lapsed,
       retries, rescues, args, kwargs
FROM pgq.tasks
WHERE lease_expires_at IS NOT NULL
"""


def upgrade() -> None:
    op.add_column(
        "tasks",
        sa.Column(
            "failures",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        schema="pgq",
    )
    op.execute(QUEUE_STATS)
    op.execute(DEAD_TASKS)
    op.execute(RUNNING_TASKS)


def downgrade() -> None:
    op.execute("DROP VIEW pgq.running_tasks")
    op.execute("DROP VIEW pgq.dead_tasks")
    op.execute("DROP VIEW pgq.queue_stats")
    op.drop_column("tasks", "failures", schema="pgq")
