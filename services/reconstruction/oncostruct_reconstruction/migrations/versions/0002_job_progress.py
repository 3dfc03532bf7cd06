"""Jobs that run: progress, retries, results, scores; one job per (series, model version).

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


def upgrade() -> None:
    op.add_column("job", sa.Column("trigger", sa.String(16), nullable=False, server_default="api"))
    op.add_column("job", sa.Column("project_id", sa.Uuid))
    op.add_column("job", sa.Column("stage", sa.String(32)))
    op.add_column("job", sa.Column("progress", sa.Float, nullable=False, server_default="0"))
    op.add_column("job", sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
    op.add_column("job", sa.Column("waiting", sa.Text))
    op.add_column("job", sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
    op.add_column("job", sa.Column("started_at", sa.DateTime(timezone=True)))
    op.add_column("job", sa.Column("finished_at", sa.DateTime(timezone=True)))
    op.add_column("job", sa.Column("series_score", sa.Float))
    op.add_column("job", sa.Column("slice_scores", postgresql.JSONB))
    op.add_column("job", sa.Column("result", postgresql.JSONB, nullable=False, server_default="{}"))
    op.add_column("job", sa.Column("timings", postgresql.JSONB, nullable=False, server_default="{}"))
    op.create_index(
        "ux_job_series_model",
        "job",
        ["series_instance_uid", "model_name", "model_version"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ux_job_series_model", "job")
    for column in (
        "timings", "result", "slice_scores", "series_score", "finished_at", "started_at", "next_attempt_at",
        "waiting", "attempts", "progress", "stage", "project_id", "trigger",
    ):  # fmt: skip
        op.drop_column("job", column)
