"""Queue pause/resume and circuit breakers (issue 21): reserved, no change yet

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Reserved so that work on several features can add migrations side by side in a fixed order; it
changes nothing until its feature lands.
"""

from __future__ import annotations

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
