"""Anomaly-detection jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from oncostruct_shared.db import SessionDep
from oncostruct_shared.errors import Invalid

from ..config import Settings
from ..deps import ReaderDep
from ..repository import get_job, list_jobs
from ..schemas import JobPage, JobPublic, JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    created, _, job_id = cursor.partition("_")
    try:
        return datetime.fromisoformat(created), uuid.UUID(job_id)
    except ValueError:
        raise Invalid("The cursor is not one this API returned.", expression=["cursor"]) from None


@router.get("", response_model=JobPage)
async def list_(
    request: Request,
    session: SessionDep,
    _: ReaderDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int | None, Query(ge=1, description="Items per page.")] = None,
    cursor: Annotated[str | None, Query(description="The `next` value of the previous page.")] = None,
) -> JobPage:
    """List jobs, newest first."""
    settings: Settings = request.app.state.settings
    size = min(limit or settings.page_size_default, settings.page_size_max)
    rows = await list_jobs(session, status, _decode_cursor(cursor) if cursor else None, size + 1)
    items = [JobPublic.model_validate(row) for row in rows[:size]]
    last = items[-1] if items else None
    following = f"{last.created_at.isoformat()}_{last.id}" if last and len(rows) > size else None
    return JobPage(items=items, next=following)


@router.get("/{job_id}", response_model=JobPublic)
async def read(job_id: uuid.UUID, session: SessionDep, _: ReaderDep) -> JobPublic:
    """Read one job and its state."""
    return JobPublic.model_validate(await get_job(session, job_id))
