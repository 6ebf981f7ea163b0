"""Per-key concurrency limits (issue 21): two columns, the claim index split, two partial indexes,
the pgq.concurrency_keys view

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Hand-written from pgq.schema (autogenerate does not see expression index columns or views).

- ``pgq.tasks.concurrency_key`` (text) and ``concurrency_limit`` (integer), both NULL for a task
  without a key, set together (``tasks_concurrency_key_has_limit``): at most
  ``concurrency_limit`` tasks of one key hold a lease at once (``pgq.concurrency``). Adding
  nullable columns without a default rewrites nothing.
- ``tasks_claim_idx`` becomes ``(queue, (concurrency_key IS NULL), priority, run_at)`` (same
  partial predicate): the claim's keyless walk is an equality on the second column, so it never
  steps over keyed tasks waiting behind a full key. Every other reader of the index (queue
  depth, purge, the metrics) still finds it through its leading ``queue`` column and predicate.
- ``tasks_concurrency_waiting_idx (concurrency_key, priority, run_at)`` on waiting keyed rows
  and ``tasks_concurrency_running_idx (concurrency_key)`` on leased keyed rows: the keyed claim
  (a skip scan over the keys that wait, each key's next tasks, its running count) and the view
  read only these. A task without a key is in neither, so it pays nothing for them.
- ``pgq.concurrency_keys``: one row per key with waiting or running tasks.

Rebuilding the claim index scans ``pgq.tasks`` once under a SHARE lock (enqueues wait for it;
on a very large table, build the new definition by hand first with ``CREATE INDEX
CONCURRENTLY`` under another name, drop the old one and rename).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Busy keys: those with a task waiting (due or scheduled) or holding a lease. `running` counts
# leases, exactly what the claim counts against the limit (a task of a dead worker holds its
# slot until its lease lapses and the rescue puts it back). Both arms of the OR are partial
# indexes, so the view never reads a task without a key.
CONCURRENCY_KEYS = """
CREATE VIEW pgq.concurrency_keys AS
SELECT concurrency_key AS key,
       count(*) FILTER (WHERE lease_expires_at IS NOT NULL) AS running,
       max(concurrency_limit) AS concurrency_limit,
       count(*) FILTER (WHERE state IN ('PENDING', 'RETRY') AND run_at <= now()) AS waiting,
       count(*) FILTER (WHERE state IN ('PENDING', 'RETRY') AND run_at > now()) AS scheduled,
       COALESCE(extract(epoch FROM now() - min(run_at) FILTER (
           WHERE state IN ('PENDING', 'RETRY') AND run_at <= now())), 0)::double precision
           AS oldest_waiting_seconds
FROM pgq.tasks
WHERE concurrency_key IS NOT NULL
  AND (lease_expires_at IS NOT NULL OR state IN ('PENDING', 'RETRY'))
GROUP BY concurrency_key
"""


def upgrade() -> None:
    op.add_column("tasks", sa.Column("concurrency_key", sa.Text(), nullable=True), schema="pgq")
    op.add_column(
        "tasks", sa.Column("concurrency_limit", sa.Integer(), nullable=True), schema="pgq"
    )
    op.create_check_constraint(
        "tasks_concurrency_key_has_limit",
        "tasks",
        "(concurrency_key IS NULL) = (concurrency_limit IS NULL)"
        " AND concurrency_limit > 0 AND concurrency_key <> ''",
        schema="pgq",
    )
    op.execute("DROP INDEX pgq.tasks_claim_idx")
    op.execute(
        "CREATE INDEX tasks_claim_idx ON pgq.tasks"
        " (queue, (concurrency_key IS NULL), priority, run_at)"
        " WHERE state IN ('PENDING', 'RETRY')"
    )
    op.execute(
        "CREATE INDEX tasks_concurrency_waiting_idx ON pgq.tasks"
        " (concurrency_key, priority, run_at)"
        " WHERE state IN ('PENDING', 'RETRY') AND concurrency_key IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX tasks_concurrency_running_idx ON pgq.tasks (concurrency_key)"
        " WHERE lease_expires_at IS NOT NULL AND concurrency_key IS NOT NULL"
    )
    op.execute(CONCURRENCY_KEYS)


def downgrade() -> None:
    op.execute("DROP VIEW pgq.concurrency_keys")
    op.execute("DROP INDEX pgq.tasks_concurrency_running_idx")
    op.execute("DROP INDEX pgq.tasks_concurrency_waiting_idx")
    op.execute("DROP INDEX pgq.tasks_claim_idx")
    op.execute(
        "CREATE INDEX tasks_claim_idx ON pgq.tasks (queue, priority, run_at)"
        " WHERE state IN ('PENDING', 'RETRY')"
    )
    op.drop_constraint("tasks_concurrency_key_has_limit", "tasks", schema="pgq")
    op.drop_column("tasks", "concurrency_limit", schema="pgq")
    op.drop_column("tasks", "concurrency_key", schema="pgq")
