"""Pull imports from upstream PACS: one row per import, one per study it pulls.

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
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("query", postgresql.JSONB, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("studies_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("studies_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("instances_stored", sa.Integer, nullable=False, server_default="0"),
        sa.Column("instances_existing", sa.Integer, nullable=False, server_default="0"),
        sa.Column("instances_failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'retrying', 'succeeded', 'failed')", name="ck_pull_import_status"
        ),
    )
    op.create_table(
        "pull_import_study",
        sa.Column("import_id", sa.Uuid, sa.ForeignKey("pull_import.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("study_instance_uid", sa.String(64), primary_key=True),
        sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("pull_import_study")
    op.drop_table("pull_import")
