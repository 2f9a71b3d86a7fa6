"""study_versions: every registered version's frozen study file, so participants stay on theirs

Revision ID: 0004
Revises: 0003

Existing studies get one row: their current study file under their current version. Earlier
versions' text was overwritten before this table existed and cannot be recovered; participants
of such a version keep being served the study's current file (store._load falls back).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study_versions",
        sa.Column("study_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("spec_yaml", sa.Text(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("stimuli_dir", sa.Text(), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_study_versions_study_id_studies"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_id", "version", name=op.f("pk_study_versions")),
    )
    op.execute(
        "INSERT INTO study_versions (study_id, version, spec_yaml, spec_hash, manifest, stimuli_dir, registered_at)"
        " SELECT id, version, spec_yaml, spec_hash, manifest, stimuli_dir, updated_at FROM studies"
    )


def downgrade() -> None:
    op.drop_table("study_versions")
