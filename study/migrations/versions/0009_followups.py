"""followup_links, followup_sessions, followup_answers: follow-up sessions after a delay

Revision ID: 0009
Revises: 0008

See study/store/tables.py (FollowupLinkRow, FollowupSessionRow, FollowupAnswerRow) and
study/store/followups.py. Nothing existing changes: session 1 stays in participants/responses.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "followup_links",
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"],
                                name=op.f("fk_followup_links_participant_id_participants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("participant_id", name=op.f("pk_followup_links")),
        sa.UniqueConstraint("token", name=op.f("uq_followup_links_token")),
    )
    op.create_table(
        "followup_sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("followup", sa.String(length=64), nullable=False),
        sa.Column("session_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("still_order", sa.JSON(), nullable=False),
        sa.Column("language", sa.String(length=20), nullable=False),
        sa.Column("delay_hours", sa.Float(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"],
                                name=op.f("fk_followup_sessions_participant_id_participants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_sessions")),
        sa.UniqueConstraint("participant_id", "followup", name=op.f("uq_followup_sessions_participant_id_followup")),
    )
    op.create_table(
        "followup_answers",
        sa.Column("followup_session_id", sa.Integer(), nullable=False),
        sa.Column("step_key", sa.String(length=150), nullable=False),
        sa.Column("item_id", sa.String(length=150), nullable=False),
        sa.Column("stimulus_id", sa.String(length=100), nullable=True),
        sa.Column("value_num", sa.Float(), nullable=True),
        sa.Column("value_text", sa.Text(), nullable=True),
        sa.Column("shown_position", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["followup_session_id"], ["followup_sessions.id"],
                                name=op.f("fk_followup_answers_followup_session_id_followup_sessions"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("followup_session_id", "step_key", "item_id", name=op.f("pk_followup_answers")),
    )


def downgrade() -> None:
    op.drop_table("followup_answers")
    op.drop_table("followup_sessions")
    op.drop_table("followup_links")
