"""wake-ups come from pgq's enqueue statements, not from a trigger

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Hand-written (autogenerate does not see triggers). Until 0003 a statement-level trigger with a
transition table sent ``pg_notify('pgq_tasks', queue)`` after every INSERT into ``pgq.tasks``.
Copying every new row into the transition table and scanning it cost about a fifth of a single
``delay()`` and a third of a batch enqueue's server time. pgq's INSERT statements now send the
same notification themselves, in the same statement (so still only on commit); a row inserted
by hand is found by the workers' next poll (``PGQ_POLL_INTERVAL``) unless it sends
``NOTIFY pgq_tasks, '<queue>'`` itself. Dropping a trigger is instant.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP TRIGGER tasks_wake_workers ON pgq.tasks")
    op.execute("DROP FUNCTION pgq.wake_workers()")


def downgrade() -> None:
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
