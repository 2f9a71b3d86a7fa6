"""participants.language: the language each participant took the study in

Revision ID: 0005
Revises: 0004

Participants enrolled before this migration saw the only language there was: English.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=20), nullable=False, server_default="en"))


def downgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_column("language")
