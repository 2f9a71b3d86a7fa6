"""trials: how each clip was seen and heard (study/playback.py PLAYBACK_METRICS)

Revision ID: 0006
Revises: 0005

Computed from the trial's playback events when its ratings are submitted (and again when a late
batch of its events arrives). Existing trials keep NULL: they were stored before these were
computed; `play_count` was already a column (never filled before) and is now filled too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replayed", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("skipped", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("seconds_hidden", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("share_muted", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("seconds_stalled", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("load_ms", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("seconds_offline", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        for name in ("seconds_offline", "load_ms", "seconds_stalled", "share_muted", "seconds_hidden", "skipped",
                     "replayed"):
            batch_op.drop_column(name)
