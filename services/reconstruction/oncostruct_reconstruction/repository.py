"""SQL of the reconstruction service."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from oncostruct_shared.errors import NotFound

from .models import JobRow
from .schemas import JobStatus


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> JobRow:
    """One job; :class:`NotFound` if absent."""
    row = await session.get(JobRow, job_id)
    if row is None:
        raise NotFound(f"Job {job_id} does not exist.")
    return row


async def list_jobs(
    session: AsyncSession, status: JobStatus | None, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[JobRow]:
    """Jobs newest first, optionally of one status, after the keyset ``after``."""
    query = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit)
    if status is not None:
        query = query.where(JobRow.status == status.value)
    if after is not None:
        query = query.where(tuple_(JobRow.created_at, JobRow.id) < tuple_(*after))
    return list((await session.scalars(query)).all())
