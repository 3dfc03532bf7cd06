"""Label schemas, project members, annotations with revisions and comments.

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

STATUSES = "'proposed', 'draft', 'submitted', 'approved', 'rejected', 'deleted'"


def upgrade() -> None:
    op.create_table(
        "label_schema",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("definition", postgresql.JSONB, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("name", "version", name="uq_label_schema_name_version"),
    )
    op.add_column("project", sa.Column("schema_id", sa.Uuid, sa.ForeignKey("label_schema.id"), nullable=True))
    op.create_table(
        "project_member",
        sa.Column("project_id", sa.Uuid, sa.ForeignKey("project.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("subject", sa.String(200), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.CheckConstraint("role IN ('annotator', 'reviewer', 'manager')", name="ck_member_role"),
    )
    op.create_table(
        "annotation",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("project_id", sa.Uuid, sa.ForeignKey("project.id"), nullable=False),
        sa.Column("schema_id", sa.Uuid, sa.ForeignKey("label_schema.id"), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("value", postgresql.JSONB, nullable=True),
        sa.Column("attributes", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("study_uid", sa.String(64), nullable=True),
        sa.Column("series_uid", sa.String(64), nullable=True),
        sa.Column("geometry", postgresql.JSONB, nullable=True),
        sa.Column("tracking_id", sa.String(64), nullable=True),
        sa.Column("scores", postgresql.JSONB, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("client_key", sa.String(200), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("level IN ('patient', 'series', 'roi')", name="ck_annotation_level"),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_annotation_status"),
        sa.UniqueConstraint("project_id", "client_key", name="uq_annotation_client_key"),
    )
    op.create_index("ix_annotation_project_created", "annotation", ["project_id", "created_at", "id"])
    op.create_index("ix_annotation_series", "annotation", ["study_uid", "series_uid"])
    op.create_index("ix_annotation_patient", "annotation", ["patient_id"])
    op.create_table(
        "annotation_revision",
        sa.Column("annotation_id", sa.Uuid, sa.ForeignKey("annotation.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("snapshot", postgresql.JSONB, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "annotation_comment",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("annotation_id", sa.Uuid, sa.ForeignKey("annotation.id", ondelete="CASCADE"), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_annotation_comment_annotation", "annotation_comment", ["annotation_id", "at"])


def downgrade() -> None:
    op.drop_table("annotation_comment")
    op.drop_table("annotation_revision")
    op.drop_table("annotation")
    op.drop_table("project_member")
    op.drop_column("project", "schema_id")
    op.drop_table("label_schema")
