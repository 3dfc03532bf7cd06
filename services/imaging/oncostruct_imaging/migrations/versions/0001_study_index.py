"""Study-level index for QIDO-RS.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study",
        sa.Column("study_instance_uid", sa.String(64), primary_key=True),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("patient_name", sa.String(324)),
        sa.Column("study_date", sa.Date),
        sa.Column("study_time", sa.String(16)),
        sa.Column("accession_number", sa.String(16)),
        sa.Column("study_description", sa.String(64)),
        sa.Column("modalities", postgresql.ARRAY(sa.String(16)), nullable=False, server_default="{}"),
        sa.Column("series_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("instance_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_study_patient_id", "study", ["patient_id"])
    op.create_index("ix_study_study_date", "study", ["study_date"])
    op.create_index("ix_study_accession_number", "study", ["accession_number"])


def downgrade() -> None:
    op.drop_table("study")
