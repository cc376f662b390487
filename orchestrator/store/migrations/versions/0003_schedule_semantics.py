"""Schedule semantics (issue 9): what a run stands for, and a schedule's policies and data trigger.

- ``runs``: ``tick_at`` (the schedule or backfill tick it stands for), ``trigger_dataset`` and
  ``trigger_commit`` (the ground-truth advance that fired a data trigger).
- ``schedules``: ``overlap``, ``catchup``, ``catchup_window`` (seconds) and ``dataset`` (a data
  trigger instead of a cron).

All nullable: rows from before mean "the default" (no tick recorded, default policies, a cron).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orchestrator.store.migrations.baseline.tables_0001 import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS: dict[str, list[sa.Column[object]]] = {
    "runs": [
        sa.Column("tick_at", UTCDateTime(), nullable=True),
        sa.Column("trigger_dataset", sa.String(128), nullable=True),
        sa.Column("trigger_commit", sa.String(64), nullable=True),
    ],
    "schedules": [
        sa.Column("overlap", sa.String(16), nullable=True),
        sa.Column("catchup", sa.String(16), nullable=True),
        sa.Column("catchup_window", sa.Integer(), nullable=True),
        sa.Column("dataset", sa.String(128), nullable=True),
    ],
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in _COLUMNS.items():
        # A database written by a pre-release build of the schedules branch (create_all, no
        # migrations) already has some of these columns: add only what is missing.
        present = {c["name"] for c in inspector.get_columns(table)}
        missing = [c for c in columns if c.name not in present]
        if missing:
            with op.batch_alter_table(table) as batch:
                for column in missing:
                    batch.add_column(column)


def downgrade() -> None:
    for table, columns in _COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in reversed(columns):
                batch.drop_column(column.name)
