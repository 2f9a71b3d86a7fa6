"""trace_batches: continuous-rating traces and moment marks, one row per batch the player sent

Revision ID: 0008
Revises: 0007

See study/store/tables.py TraceBatchRow for why a batch (not a sample) is a row. The older
continuous_samples table stays for data recorded before; nothing writes it any more.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trace_batches",
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("stimulus_id", sa.String(length=100), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("t", sa.JSON(), nullable=False),
        sa.Column("x", sa.JSON(), nullable=False),
        sa.Column("y", sa.JSON(), nullable=True),
        sa.Column("marks", sa.JSON(), nullable=True),
        sa.Column("start_x", sa.Float(), nullable=True),
        sa.Column("start_y", sa.Float(), nullable=True),
        sa.Column("first_move_t", sa.Float(), nullable=True),
        sa.Column("client_time", sa.Float(), nullable=True),
        sa.Column("server_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"],
                                name=op.f("fk_trace_batches_participant_id_participants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("participant_id", "position", "attempt", "seq", name=op.f("pk_trace_batches")),
    )


def downgrade() -> None:
    op.drop_table("trace_batches")
