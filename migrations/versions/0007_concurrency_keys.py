"""Per-key concurrency limits (issue 21): reserved, no change yet

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Reserved so that work on several features can add migrations side by side in a fixed order; it
changes nothing until its feature lands.
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
