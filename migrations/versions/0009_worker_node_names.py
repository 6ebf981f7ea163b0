"""Worker node names and remote control: the tables app.control's broadcasts travel through

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

Written to match pgq.schema (``tests/migration`` checks that ``upgrade head`` equals the
metadata) and hand-checked. Both tables are new and empty: instant both ways.

- Node names (``pgq worker -n``) need no new column: ``pgq.workers.hostname`` holds the node
  name exactly as ``-n`` expanded it (``celery@<host>`` by default), which is what
  ``app.control.inspect()`` replies are keyed by, and ``pgq.workers.id``
  (``<node name>/<pid>-<random>``) stays the per-process unique key that task rows and leases
  refer to.
- ``pgq.control_commands``: one row per ``app.control.broadcast`` (``rate_limit``,
  ``add_consumer``, ``pool_grow``, custom commands, ``inspect().conf()``...), naming the live
  workers it is for (``targets``: their ``pgq.workers.id``, resolved by the sender from the
  destination, pattern and limit it was given). A ``pgq_control`` NOTIFY
  ``control <id>`` wakes the workers; each one named runs the command.
- ``pgq.control_replies``: a worker's reply to a command sent with ``reply=True``, keyed by
  command and worker; the sender reads them until every target replied or its timeout passed.
  Both are pruned an hour after the command (by the next broadcast).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "control_commands",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column(
            "arguments",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("targets", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("reply", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("command <> ''", name="control_commands_command_not_empty"),
        sa.PrimaryKeyConstraint("id"),
        schema="pgq",
    )
    op.create_table(
        "control_replies",
        sa.Column("command_id", sa.BigInteger(), nullable=False),
        sa.Column("worker_id", sa.Text(), nullable=False),
        sa.Column("node_name", sa.Text(), nullable=False),
        sa.Column("reply", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["command_id"], ["pgq.control_commands.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("command_id", "worker_id"),
        schema="pgq",
    )


def downgrade() -> None:
    op.drop_table("control_replies", schema="pgq")
    op.drop_table("control_commands", schema="pgq")
