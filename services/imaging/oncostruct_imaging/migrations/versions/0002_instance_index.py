"""Patient/study/series/instance index with stored DICOM JSON and frame offsets.

Replaces 0001's study-only table (which held no instances: nothing to carry
over) with the four levels QIDO-RS and WADO-RS need.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _now() -> sa.Column[sa.DateTime]:
    return sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def _lower_pattern_index(name: str, table: str, column: str) -> None:
    # lower(col) LIKE 'abc%' uses a text_pattern_ops index (case-insensitive PN matching).
    op.execute(f"CREATE INDEX {name} ON {table} (lower({column}) text_pattern_ops)")


def upgrade() -> None:
    op.drop_table("study")
    op.create_table(
        "patient",
        sa.Column("pk", sa.BigInteger, primary_key=True),
        sa.Column("patient_id", sa.Text, nullable=False, server_default=""),
        sa.Column("issuer_of_patient_id", sa.Text, nullable=False, server_default=""),
        sa.Column("name_alphabetic", sa.Text),
        sa.Column("name_ideographic", sa.Text),
        sa.Column("name_phonetic", sa.Text),
        sa.Column("birth_date", sa.Date),
        sa.Column("sex", sa.Text),
        _now(),
        sa.UniqueConstraint("patient_id", "issuer_of_patient_id", name="uq_patient_id_issuer"),
    )
    for component in ("alphabetic", "ideographic", "phonetic"):
        _lower_pattern_index(f"ix_patient_name_{component}", "patient", f"name_{component}")
    op.create_table(
        "study",
        sa.Column("pk", sa.BigInteger, primary_key=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("patient_pk", sa.BigInteger, sa.ForeignKey("patient.pk"), nullable=False),
        sa.Column("study_date", sa.Date),
        sa.Column("study_time", sa.Text),
        sa.Column("accession_number", sa.Text),
        sa.Column("study_id", sa.Text),
        sa.Column("study_description", sa.Text),
        sa.Column("referring_alphabetic", sa.Text),
        sa.Column("referring_ideographic", sa.Text),
        sa.Column("referring_phonetic", sa.Text),
        sa.Column("attributes", postgresql.JSONB, nullable=False),
        _now(),
    )
    op.create_index("ix_study_patient_pk", "study", ["patient_pk"])
    op.create_index("ix_study_study_date", "study", ["study_date"])
    op.create_index("ix_study_accession_number", "study", ["accession_number"])
    op.create_table(
        "series",
        sa.Column("pk", sa.BigInteger, primary_key=True),
        sa.Column("series_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("study_pk", sa.BigInteger, sa.ForeignKey("study.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("modality", sa.Text),
        sa.Column("series_number", sa.Integer),
        sa.Column("series_description", sa.Text),
        sa.Column("body_part_examined", sa.Text),
        sa.Column("pps_start_date", sa.Date),
        sa.Column("pps_start_time", sa.Text),
        sa.Column("scheduled_procedure_step_ids", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("requested_procedure_ids", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("attributes", postgresql.JSONB, nullable=False),
        _now(),
    )
    op.create_index("ix_series_study_pk", "series", ["study_pk"])
    op.create_index("ix_series_modality", "series", ["modality"])
    op.create_table(
        "instance",
        sa.Column("pk", sa.BigInteger, primary_key=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("series_pk", sa.BigInteger, sa.ForeignKey("series.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("instance_number", sa.Integer),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer),
        sa.Column("columns", sa.Integer),
        sa.Column("bits_allocated", sa.Integer),
        sa.Column("number_of_frames", sa.Integer),
        sa.Column("storage_key", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("frames", postgresql.JSONB),
        sa.Column("bulkdata", postgresql.JSONB, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        _now(),
    )
    op.create_index("ix_instance_series_pk_number", "instance", ["series_pk", "instance_number"])
    op.create_index("ix_instance_sop_class_uid", "instance", ["sop_class_uid"])


def downgrade() -> None:
    op.drop_table("instance")
    op.drop_table("series")
    op.drop_table("study")
    op.drop_table("patient")
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
