"""Overlap ``allow`` meets admission: a queued run started with ``allow`` keeps its exemption from
"its pipeline is busy" across a restart (``runs.side_by_side``; None reads as false).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("side_by_side", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("side_by_side")
