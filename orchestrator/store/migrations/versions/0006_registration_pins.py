"""Pins: what this instance accepted of each registration its pipelines use (a tool's image, a
dataset's master, and who owned it then), so that a registration changed afterwards is not used
until the operator accepts the change (``pipelines/pins.py``).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orchestrator.store.migrations.baseline.tables_0001 import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registration_pins",
        sa.Column("scope", sa.String(160), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("pinned_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("registration_pins")
