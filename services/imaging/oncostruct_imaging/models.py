"""Tables of the imaging service (created by ``migrations/``)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import ARRAY, Date, DateTime, Integer, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the imaging schema."""


class StudyRow(Base):
    """One study in the index (QIDO-RS study level, PS3.18 Table 10.6.1-5)."""

    __tablename__ = "study"

    study_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    patient_name: Mapped[str | None] = mapped_column(String(324))
    study_date: Mapped[date | None] = mapped_column(Date)
    study_time: Mapped[str | None] = mapped_column(String(16))
    accession_number: Mapped[str | None] = mapped_column(String(16))
    study_description: Mapped[str | None] = mapped_column(String(64))
    modalities: Mapped[list[str]] = mapped_column(ARRAY(String(16)), default=list)
    series_count: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
