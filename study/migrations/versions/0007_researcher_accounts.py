"""researchers and researcher_study_access: one login per researcher, a role, access per study

Revision ID: 0007
Revises: 0006

No rows are created: a lab keeps the single shared password until the first account is added
with `kuleshov researcher add`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "researchers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=50), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_researchers")),
        sa.UniqueConstraint("username", name=op.f("uq_researchers_username")),
    )
    op.create_table(
        "researcher_study_access",
        sa.Column("researcher_id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.String(length=100), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["researcher_id"], ["researchers.id"],
                                name=op.f("fk_researcher_study_access_researcher_id_researchers"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"],
                                name=op.f("fk_researcher_study_access_study_id_studies"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("researcher_id", "study_id", name=op.f("pk_researcher_study_access")),
    )


def downgrade() -> None:
    op.drop_table("researcher_study_access")
    op.drop_table("researchers")
