"""SQL of the reconstruction service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oncostruct_shared.errors import NotFound

from .models import JobRow
from .schemas import JobStatus

#: States a new request for the same (series, model version) starts again.
RESTARTABLE = (JobStatus.failed.value, JobStatus.cancelled.value)


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> JobRow:
    """One job; :class:`NotFound` if absent."""
    row = await session.get(JobRow, job_id)
    if row is None:
        raise NotFound(f"Job {job_id} does not exist.")
    return row


async def find_job(session: AsyncSession, series_uid: str, model_name: str, model_version: str) -> JobRow | None:
    """The job of a (series, model, version), if any."""
    query = select(JobRow).where(
        JobRow.series_instance_uid == series_uid,
        JobRow.model_name == model_name,
        JobRow.model_version == model_version,
    )
    return (await session.scalars(query)).one_or_none()


async def create_job(session: AsyncSession, values: dict[str, Any]) -> tuple[uuid.UUID, bool]:
    """Insert a queued job unless its (series, model, version) has one; restart that one if it failed.

    Returns the job id and whether it must be (re)queued. Safe under concurrent requests:
    the unique index decides, and the loser reads the winner's row.
    """
    statement = (
        insert(JobRow)
        .values(id=uuid.uuid4(), status=JobStatus.queued.value, **values)
        .on_conflict_do_nothing(index_elements=["series_instance_uid", "model_name", "model_version"])
        .returning(JobRow.id)
    )
    new_id = (await session.execute(statement)).scalar_one_or_none()
    if new_id is not None:
        await session.commit()
        return new_id, True
    existing = await find_job(session, values["series_instance_uid"], values["model_name"], values["model_version"])
    if existing is None:  # deleted between the two statements: try once more
        return await create_job(session, values)
    restart = await session.execute(
        update(JobRow)
        .where(JobRow.id == existing.id, JobRow.status.in_(RESTARTABLE))
        .values(
            status=JobStatus.queued.value,
            error=None,
            waiting=None,
            attempts=0,
            progress=0.0,
            stage=None,
            next_attempt_at=None,
            finished_at=None,
            updated_at=datetime.now().astimezone(),
        )
    )
    await session.commit()
    return existing.id, bool(getattr(restart, "rowcount", 0))


async def list_jobs(
    session: AsyncSession,
    filters: dict[str, str | None],
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[JobRow]:
    """Jobs newest first, filtered by equal column values, after the keyset ``after``."""
    query = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit)
    for column, value in filters.items():
        if value is not None:
            query = query.where(getattr(JobRow, column) == value)
    if after is not None:
        query = query.where(tuple_(JobRow.created_at, JobRow.id) < tuple_(*after))
    return list((await session.scalars(query)).all())


async def set_job(sessionmaker: async_sessionmaker[AsyncSession], job_id: uuid.UUID, **values: Any) -> None:
    """Update a job's columns in their own short transaction (progress is visible at once).

    A cancelled job is left as it is: a worker still running it writes nothing more.
    """
    async with sessionmaker() as session:
        await session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status != JobStatus.cancelled.value)
            .values(updated_at=datetime.now().astimezone(), **values)
        )
        await session.commit()


#: States a job can be cancelled in.
CANCELLABLE = (JobStatus.queued.value, JobStatus.running.value)


async def cancel_job(session: AsyncSession, job_id: uuid.UUID) -> bool:
    """Cancel a queued or running job; whether it was (False: it had finished, or was cancelled already)."""
    now = datetime.now().astimezone()
    cancelled = await session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status.in_(CANCELLABLE))
        .values(status=JobStatus.cancelled.value, waiting=None, next_attempt_at=None, finished_at=now, updated_at=now)
    )
    await session.commit()
    return bool(getattr(cancelled, "rowcount", 0))


async def is_cancelled(sessionmaker: async_sessionmaker[AsyncSession], job_id: uuid.UUID) -> bool:
    """Whether the job has been cancelled."""
    async with sessionmaker() as session:
        status = await session.scalar(select(JobRow.status).where(JobRow.id == job_id))
    return status == JobStatus.cancelled.value
