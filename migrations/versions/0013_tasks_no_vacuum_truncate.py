"""pgq.tasks: VACUUM does not truncate the table's empty tail

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

Hand-written (a storage parameter: ``alembic check`` has nothing to compare). Instant both ways.

A VACUUM that finds empty pages at the end of a table truncates them, and to do so takes the
table's ACCESS EXCLUSIVE lock: every claim, enqueue and finish waits behind it while it checks
the pages backwards (it gives the lock up when it sees others waiting, after up to 20 ms, and
tries again on its next pass), and a hot standby replays the lock too, cancelling its queries
on the table. A queue's table turns over all of its rows: the tail VACUUM frees now is filled
again by the next seconds' enqueues, so truncating it gains nothing that lasts. A soak with
two-minute retention saw the table truncated and refilled within the same minute, and the
samples with a VACUUM pass had the worst enqueue-to-start latency. ``vacuum_truncate = false``
holds for autovacuum and for the worker's own VACUUM where autovacuum is off.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE pgq.tasks SET (vacuum_truncate = false)")


def downgrade() -> None:
    op.execute("ALTER TABLE pgq.tasks RESET (vacuum_truncate)")
