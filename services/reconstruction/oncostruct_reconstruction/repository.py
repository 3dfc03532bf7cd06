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
            started_at=None,  # a run of it still going (cancelled meanwhile) no longer matches: it stops
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


async def set_job(
    sessionmaker: async_sessionmaker[AsyncSession], job_id: uuid.UUID, run: datetime | None = None, **values: Any
) -> bool:
    """Update a job's columns in their own short transaction (progress is visible at once); whether it was.

    A cancelled job is left as it is. With ``run`` (the ``started_at`` a worker's run wrote), only
    while the job is still that run: once it is cancelled or started again, the old run writes
    nothing more.
    """
    query = update(JobRow).where(JobRow.id == job_id, JobRow.status != JobStatus.cancelled.value)
    if run is not None:
        query = query.where(JobRow.started_at == run)
    async with sessionmaker() as session:
        done = await session.execute(query.values(updated_at=datetime.now().astimezone(), **values))
        await session.commit()
    return bool(getattr(done, "rowcount", 0))


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


async def superseded(sessionmaker: async_sessionmaker[AsyncSession], job_id: uuid.UUID, run: datetime) -> bool:
    """Whether the run that wrote ``started_at = run`` is over: the job was cancelled or started again."""
    async with sessionmaker() as session:
        row = (await session.execute(select(JobRow.status, JobRow.started_at).where(JobRow.id == job_id))).one_or_none()
    return row is None or row.status == JobStatus.cancelled.value or row.started_at != run
