"""Deduplication windows and runtime-editable periodic tasks (issue 21): reserved, no change yet

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Reserved so that work on several features can add migrations side by side in a fixed order; it
changes nothing until its feature lands.
"""

from __future__ import annotations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
