"""Retry from the failed step (runs/retry.py): a run records the run it retries (``runs.retry_of``),
and each of its steps why it was reused or ran again (``run_steps.reason``: "failed in run X",
"ground-truth of D moved since run X ...").

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("retry_of", sa.String(32), nullable=True))
    op.create_index("ix_runs_retry_of", "runs", ["retry_of"])
    with op.batch_alter_table("run_steps") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_column("reason")
    op.drop_index("ix_runs_retry_of", "runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("retry_of")
