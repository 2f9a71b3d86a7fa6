"""device info and playback index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 14:54:51.825177
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('device_info', sa.JSON(), nullable=True))

    with op.batch_alter_table('playback_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_playback_events_stimulus_id_event'), ['stimulus_id', 'event'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('playback_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_playback_events_stimulus_id_event'))

    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.drop_column('device_info')

