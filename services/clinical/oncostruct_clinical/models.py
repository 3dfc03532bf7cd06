"""Tables of the clinical service (created by ``migrations/``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, Numeric, SmallInteger, String, Text, Uuid, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the clinical schema."""


class ResourceRow(Base):
    """The current version of each FHIR resource (deleted ones keep a tombstone)."""

    __tablename__ = "resource"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class ResourceHistoryRow(Base):
    """Every version of every resource, immutable."""

    __tablename__ = "resource_history"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class _IndexColumns:
    """Key columns every search index table has (rows are replaced with each new version).

    The tables have no primary key (a resource has many rows per parameter);
    the ORM mapping declares one only because SQLAlchemy needs it. The
    repository reads and writes these tables with SQL, not through the ORM.
    """

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    param: Mapped[str] = mapped_column(String(128), primary_key=True)


class TokenIndexRow(_IndexColumns, Base):
    """Token search values (system, code, display/text, Identifier.type)."""

    __tablename__ = "sp_token"
    system: Mapped[str | None] = mapped_column(Text)
    code: Mapped[str | None] = mapped_column(Text)
    text_norm: Mapped[str | None] = mapped_column(Text)
    type_system: Mapped[str | None] = mapped_column(Text)
    type_code: Mapped[str | None] = mapped_column(Text)


class StringIndexRow(_IndexColumns, Base):
    """String search values, as written and normalised (case and accents folded)."""

    __tablename__ = "sp_string"
    value_norm: Mapped[str] = mapped_column(Text)
    value: Mapped[str] = mapped_column(Text)


class DateIndexRow(_IndexColumns, Base):
    """Date search values as [low, high] instant ranges at the value's precision."""

    __tablename__ = "sp_date"
    low: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    high: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReferenceIndexRow(_IndexColumns, Base):
    """Reference search values: local target type and id, or an absolute URL."""

    __tablename__ = "sp_reference"
    target_type: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(Text)


class NumberIndexRow(_IndexColumns, Base):
    """Number search values."""

    __tablename__ = "sp_number"
    value: Mapped[Decimal] = mapped_column(Numeric)


class QuantityIndexRow(_IndexColumns, Base):
    """Quantity search values with their unit system and code."""

    __tablename__ = "sp_quantity"
    value: Mapped[Decimal] = mapped_column(Numeric)
    system: Mapped[str | None] = mapped_column(Text)
    code: Mapped[str | None] = mapped_column(Text)
    unit: Mapped[str | None] = mapped_column(Text)


class UriIndexRow(_IndexColumns, Base):
    """URI search values."""

    __tablename__ = "sp_uri"
    value: Mapped[str] = mapped_column(Text)


class CompositeIndexRow(_IndexColumns, Base):
    """Composite search values: each component value of one element (``node``) is a row (``part`` 0 or 1)
    with the columns of its type (token: system, code, text_norm; quantity: value, system, code, unit;
    date: low, high; string: value_norm)."""

    __tablename__ = "sp_composite"
    node: Mapped[int] = mapped_column(Integer, primary_key=True)
    part: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    system: Mapped[str | None] = mapped_column(Text)
    code: Mapped[str | None] = mapped_column(Text)
    text_norm: Mapped[str | None] = mapped_column(Text)
    value: Mapped[Decimal | None] = mapped_column(Numeric)
    unit: Mapped[str | None] = mapped_column(Text)
    low: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    high: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    value_norm: Mapped[str | None] = mapped_column(Text)


class BulkExportRow(Base):
    """A FHIR Bulk Data export job (read and written with SQL by :mod:`.api.bulk`)."""

    __tablename__ = "bulk_export"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    transaction_time: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BulkExportFileRow(Base):
    """One NDJSON output file of an export."""

    __tablename__ = "bulk_export_file"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("bulk_export.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)


class PullImportRow(Base):
    """A pull import from a hospital FHIR server (read and written with SQL by :mod:`.api.pull`)."""

    __tablename__ = "pull_import"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    source: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    patients: Mapped[list[str]] = mapped_column(JSONB)
    done: Mapped[list[str]] = mapped_column(JSONB)
    imported: Mapped[int] = mapped_column(Integer)
    errors: Mapped[list[str]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
