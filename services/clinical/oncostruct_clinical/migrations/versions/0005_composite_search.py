"""Composite search parameters (R4 §3.1.1.4.10): one row per component value, paired by node.

The two components of a composite are matched on the same element (the same
Observation, or the same Observation.component): each element found by the
composite's expression gets a ``node`` number, and its component values are rows
with ``part`` 0 and 1. Resources stored before this revision are indexed here.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = ("param", "node", "part", "system", "code", "text_norm", "value", "unit", "low", "high", "value_norm")


def upgrade() -> None:
    op.create_table(
        "sp_composite",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(128), nullable=False),
        sa.Column("node", sa.Integer, nullable=False),
        sa.Column("part", sa.SmallInteger, nullable=False),
        sa.Column("system", sa.Text, nullable=True),
        sa.Column("code", sa.Text, nullable=True),
        sa.Column("text_norm", sa.Text, nullable=True),
        sa.Column("value", sa.Numeric, nullable=True),
        sa.Column("unit", sa.Text, nullable=True),
        sa.Column("low", sa.DateTime(timezone=True), nullable=True),
        sa.Column("high", sa.DateTime(timezone=True), nullable=True),
        sa.Column("value_norm", sa.Text, nullable=True),
    )
    op.create_index("ix_sp_composite_resource", "sp_composite", ["resource_type", "resource_id"])
    op.create_index("ix_sp_composite_code", "sp_composite", ["resource_type", "param", "part", "code", "system"])
    _index_existing()


def _index_existing() -> None:
    from oncostruct_clinical.search.indexing import index_resource
    from oncostruct_clinical.search.parameters import registry

    types = sorted(t for t, params in registry().items() if any(p.type == "composite" for p in params.values()))
    connection = op.get_bind()
    insert = sa.text(
        "INSERT INTO sp_composite (resource_type, resource_id, " + ", ".join(_COLUMNS) + ") "
        "VALUES (:t, :i, " + ", ".join(f":{c}" for c in _COLUMNS) + ")"
    )
    rows = connection.execute(
        sa.text("SELECT resource_type, id, content::text FROM resource WHERE NOT deleted AND resource_type = ANY(:t)"),
        {"t": types},
    )
    batch: list[dict[str, object]] = []
    for resource_type, resource_id, content in rows:
        # Only composite rows are new; the base URL matters for references, which composites do not hold.
        for row in index_resource(json.loads(content), "").composite:
            batch.append({"t": resource_type, "i": resource_id, **dict(zip(_COLUMNS, row, strict=True))})
    if batch:
        connection.execute(insert, batch)


def downgrade() -> None:
    op.drop_table("sp_composite")
