"""The strategy watcher's state per step (issue 21: a main tool, ordered replacements, a watcher):
``strategy_states``, one row per pipeline and step with a ``strategy``. Pipelines initialised before
have none; a step's row is written at its first run with a strategy.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orchestrator.store.migrations.baseline.tables_0001 import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "strategy_states",
        sa.Column("pipeline", sa.String(128), primary_key=True),
        sa.Column("step", sa.String(128), primary_key=True),
        sa.Column("active", sa.String(128), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("forced", sa.String(128), nullable=True),
        sa.Column("tools", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("strategy_states")
