"""Admission (issue 9): the priority a run is admitted with, and the one a schedule gives its runs.

- ``runs.priority``: higher first, then older; a queued run (status ``queued``) is a row the next
  start re-admits, so everything needed to start it is on the row (trigger, ``schedule_id``,
  ``tick_at``/``trigger_*``, ``priority``).
- ``schedules.priority``.

Both nullable: rows from before read as priority 0.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TABLES = ("runs", "schedules")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("priority", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("priority")
