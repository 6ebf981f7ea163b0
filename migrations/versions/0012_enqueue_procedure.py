"""pgq.enqueue: one task's insert, and its wake-up after the insert's own commit

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

Hand-written (no table changes: ``alembic check`` has nothing to compare). A procedure only:
instant both ways.

A notifying transaction takes PostgreSQL's notify lock (one per database) before its commit and
holds it until the commit is flushed to disk. The single-task insert used to NOTIFY in its own
transaction, so eight processes calling ``delay()`` at once flushed their commits one after
another: one WAL flush per call, and eight producers together slower than one (issue 23).

``CALL pgq.enqueue(..., commit_first)`` inserts the task as the insert_task statement did. A due
task is then announced:

- ``commit_first`` (a producer's pooled connection, outside any transaction): the insert commits
  first, without the lock, so concurrent producers' commits share flushes; the NOTIFYs
  (``pgq_tasks`` and ``pgq_priority``, as before) follow in a second transaction. That one
  writes no WAL, and PostgreSQL commits such a transaction without waiting for a flush (or a
  synchronous standby), so it holds the lock only for an instant. A worker woken finds the row
  committed. The wake-up is a hint, as every NOTIFY in pgq: if the connection dies between the
  two commits, the task is found by the workers' next poll.
- otherwise (inside the caller's transaction): the NOTIFYs go in that transaction, delivered on
  its commit, and none on rollback (no COMMIT may run there).

``id`` comes back NULL when the id or an open idempotency key exists already (nothing inserted).
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ENQUEUE = """
CREATE PROCEDURE pgq.enqueue(
    INOUT id text, p_name text, p_queue text, p_priority smallint,
    p_eta timestamptz, p_countdown double precision,
    p_expires_at timestamptz, p_expires_in double precision,
    p_args jsonb, p_kwargs jsonb, p_options jsonb,
    p_idempotency_key text, p_parent_id text, p_root_id text,
    p_concurrency_key text, p_concurrency_limit integer, p_idempotency_ttl double precision,
    commit_first boolean)
LANGUAGE plpgsql AS $$
DECLARE
    due boolean;
BEGIN
    INSERT INTO pgq.tasks AS t (id, name, queue, priority, run_at, expires_at, args, kwargs,
                                options, idempotency_key, parent_id, root_id, concurrency_key,
                                concurrency_limit, idempotency_expires_at)
    VALUES (enqueue.id, p_name, p_queue, p_priority,
            COALESCE(p_eta, now() + make_interval(secs => p_countdown), now()),
            COALESCE(p_expires_at, now() + make_interval(secs => p_expires_in)),
            p_args, p_kwargs, p_options, p_idempotency_key, p_parent_id, p_root_id,
            p_concurrency_key, p_concurrency_limit,
            now() + make_interval(secs => p_idempotency_ttl))
    ON CONFLICT DO NOTHING
    RETURNING t.id, t.run_at <= now() INTO enqueue.id, due;
    IF due THEN
        IF commit_first THEN
            COMMIT;
        END IF;
        PERFORM pg_notify('pgq_tasks', left(p_queue, 255)),
                pg_notify('pgq_priority', p_priority || ' ' || left(p_queue, 255));
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute(ENQUEUE)


def downgrade() -> None:
    op.execute(
        "DROP PROCEDURE pgq.enqueue(text, text, text, smallint, timestamptz, double precision,"
        " timestamptz, double precision, jsonb, jsonb, jsonb, text, text, text, text, integer,"
        " double precision, boolean)"
    )
