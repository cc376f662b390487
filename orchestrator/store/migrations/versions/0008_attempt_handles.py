"""Steps run where the compute is (orchestrator/executors): each attempt keeps its object's handle
(``backend``, the object's name in ``container``, ``engine_id``) so that a restart finds the object
again and adopts it, and records where it ran (``node``) and how long it waited to be scheduled
(``queued_seconds``). Attempt statuses grow with the seam's typed ends (``image_unavailable`` is
17 characters): the column widens to 32.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_attempts") as batch:
        batch.add_column(sa.Column("backend", sa.String(64), nullable=True))
        batch.add_column(sa.Column("engine_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("node", sa.String(256), nullable=True))
        batch.add_column(sa.Column("queued_seconds", sa.Float(), nullable=True))
        batch.alter_column("status", type_=sa.String(32), existing_type=sa.String(16), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("run_attempts") as batch:
        batch.alter_column("status", type_=sa.String(16), existing_type=sa.String(32), existing_nullable=False)
        batch.drop_column("queued_seconds")
        batch.drop_column("node")
        batch.drop_column("engine_id")
        batch.drop_column("backend")
