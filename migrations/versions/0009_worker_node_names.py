"""Worker node names set by -n (issue 19): reserved, no change yet

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

Reserved so that work on several features can add migrations side by side in a fixed order; it
changes nothing until its feature lands.
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
