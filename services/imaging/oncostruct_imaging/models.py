"""Tables of the imaging index (created by ``migrations/``).

Patient → study → series → instance, with the QIDO-RS matching keys of each
level as columns (PS3.18 Table 10.6.1-5) and, per instance, the DICOM JSON
metadata computed once at ingest plus where each frame and bulk data element
lies in the stored file, so that neither QIDO-RS nor WADO-RS metadata and
frame reads ever parse a stored file again.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, String, Text, Uuid, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the imaging schema."""


class PatientRow(Base):
    """A patient, identified by Patient ID within its issuer (PS3.3 §C.7.1.1)."""

    __tablename__ = "patient"

    pk: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    patient_id: Mapped[str] = mapped_column(Text, default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(Text, default="")
    name_alphabetic: Mapped[str | None] = mapped_column(Text)
    name_ideographic: Mapped[str | None] = mapped_column(Text)
    name_phonetic: Mapped[str | None] = mapped_column(Text)
    birth_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StudyRow(Base):
    """A study (QIDO-RS study level, PS3.18 Table 10.6.1-5)."""

    __tablename__ = "study"

    pk: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.pk"))
    study_date: Mapped[date | None] = mapped_column(Date)
    study_time: Mapped[str | None] = mapped_column(Text)
    accession_number: Mapped[str | None] = mapped_column(Text)
    study_id: Mapped[str | None] = mapped_column(Text)
    study_description: Mapped[str | None] = mapped_column(Text)
    referring_alphabetic: Mapped[str | None] = mapped_column(Text)
    referring_ideographic: Mapped[str | None] = mapped_column(Text)
    referring_phonetic: Mapped[str | None] = mapped_column(Text)
    #: Patient- and study-level attributes of the study's instances, as DICOM JSON.
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SeriesRow(Base):
    """A series (QIDO-RS series level, PS3.18 Table 10.6.1-5)."""

    __tablename__ = "series"

    pk: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.pk", ondelete="CASCADE"))
    modality: Mapped[str | None] = mapped_column(Text)
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(Text)
    body_part_examined: Mapped[str | None] = mapped_column(Text)
    pps_start_date: Mapped[date | None] = mapped_column(Date)
    pps_start_time: Mapped[str | None] = mapped_column(Text)
    scheduled_procedure_step_ids: Mapped[list[str]] = mapped_column(ARRAY(Text))
    requested_procedure_ids: Mapped[list[str]] = mapped_column(ARRAY(Text))
    #: Series-level attributes of the series' instances, as DICOM JSON.
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: Creation time of the newest instance announced in a "series complete" event.
    complete_event_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class InstanceRow(Base):
    """A stored SOP instance: its QIDO keys, its file, its metadata and frame layout."""

    __tablename__ = "instance"

    pk: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.pk", ondelete="CASCADE"))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    bits_allocated: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    content_sha256: Mapped[str] = mapped_column(String(64))
    #: Per frame, the ``[offset, length]`` byte ranges of its fragments in the file (None: not indexable).
    frames: Mapped[list[list[list[int]]] | None] = mapped_column(JSONB)
    #: Top-level bulk data elements: tag → ``[offset, length]`` of the value in the file.
    bulkdata: Mapped[dict[str, list[int]]] = mapped_column(JSONB)
    #: DICOM JSON (PS3.18 §F.2) of the instance, BulkDataURIs relative to the service base.
    metadata_json: Mapped[str] = mapped_column("metadata", Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PullImportRow(Base):
    """A pull of studies from an upstream PACS (resumable: see ``pull_import_study``)."""

    __tablename__ = "pull_import"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    source: Mapped[str] = mapped_column(String(100))
    query: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    studies_total: Mapped[int] = mapped_column(Integer, default=0)
    studies_done: Mapped[int] = mapped_column(Integer, default=0)
    instances_stored: Mapped[int] = mapped_column(Integer, default=0)
    instances_existing: Mapped[int] = mapped_column(Integer, default=0)
    instances_failed: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PullImportStudyRow(Base):
    """One study of a pull import and whether all its instances are in."""

    __tablename__ = "pull_import_study"

    import_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("pull_import.id"), primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
