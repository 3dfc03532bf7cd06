"""Pull imports from hospital FHIR servers.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pull_import",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("request", postgresql.JSONB, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("patients", postgresql.JSONB, nullable=False),
        sa.Column("done", postgresql.JSONB, nullable=False),
        sa.Column("imported", sa.Integer, nullable=False),
        sa.Column("errors", postgresql.JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name="ck_pull_import_status"),
    )


def downgrade() -> None:
    op.drop_table("pull_import")
