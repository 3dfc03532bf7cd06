"""Search indexes, one table per SearchParameter type (http://hl7.org/fhir/R4/search.html).

Rows are derived at write time by evaluating each SearchParameter's FHIRPath
expression; they are replaced in the same transaction as the resource.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KEY = ("resource_type", "resource_id", "param")


def _table(name: str, *columns: sa.Column[object]) -> None:
    op.create_table(
        name,
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(128), nullable=False),
        *columns,
    )
    op.create_index(f"ix_{name}_resource", name, ["resource_type", "resource_id"])


def upgrade() -> None:
    _table(
        "sp_token",
        sa.Column("system", sa.Text, nullable=True),
        sa.Column("code", sa.Text, nullable=True),
        sa.Column("text_norm", sa.Text, nullable=True),
        sa.Column("type_system", sa.Text, nullable=True),
        sa.Column("type_code", sa.Text, nullable=True),
    )
    op.create_index("ix_sp_token_code", "sp_token", ["resource_type", "param", "code", "system"])
    _table("sp_string", sa.Column("value_norm", sa.Text, nullable=False), sa.Column("value", sa.Text, nullable=False))
    op.create_index(
        "ix_sp_string_value",
        "sp_string",
        ["resource_type", "param", "value_norm"],
        postgresql_ops={"value_norm": "text_pattern_ops"},
    )
    _table(
        "sp_date",
        sa.Column("low", sa.DateTime(timezone=True), nullable=False),
        sa.Column("high", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sp_date_range", "sp_date", ["resource_type", "param", "low", "high"])
    _table(
        "sp_reference",
        sa.Column("target_type", sa.String(64), nullable=True),
        sa.Column("target_id", sa.String(64), nullable=True),
        sa.Column("url", sa.Text, nullable=True),
    )
    op.create_index("ix_sp_reference_target", "sp_reference", ["target_id", "target_type", "param", "resource_type"])
    _table("sp_number", sa.Column("value", sa.Numeric, nullable=False))
    op.create_index("ix_sp_number_value", "sp_number", ["resource_type", "param", "value"])
    _table(
        "sp_quantity",
        sa.Column("value", sa.Numeric, nullable=False),
        sa.Column("system", sa.Text, nullable=True),
        sa.Column("code", sa.Text, nullable=True),
        sa.Column("unit", sa.Text, nullable=True),
    )
    op.create_index("ix_sp_quantity_value", "sp_quantity", ["resource_type", "param", "value"])
    _table("sp_uri", sa.Column("value", sa.Text, nullable=False))
    op.create_index("ix_sp_uri_value", "sp_uri", ["resource_type", "param", "value"])
    op.create_index("ix_resource_history_last_updated", "resource_history", ["last_updated"])
    op.create_index("ix_resource_type_last_updated", "resource", ["resource_type", "last_updated", "id"])


def downgrade() -> None:
    op.drop_index("ix_resource_type_last_updated", table_name="resource")
    op.drop_index("ix_resource_history_last_updated", table_name="resource_history")
    for name in ("sp_uri", "sp_quantity", "sp_number", "sp_reference", "sp_date", "sp_string", "sp_token"):
        op.drop_table(name)
