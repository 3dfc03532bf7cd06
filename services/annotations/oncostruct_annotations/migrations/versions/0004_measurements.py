"""Measurements in millimetres computed from the image geometry.

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
    op.add_column("annotation", sa.Column("measurements", postgresql.JSONB))


def downgrade() -> None:
    op.drop_column("annotation", "measurements")
