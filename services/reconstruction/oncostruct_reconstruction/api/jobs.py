"""Anomaly-detection jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import httpx
from fastapi import APIRouter, Query, Request, Response

from oncostruct_shared.db import SessionDep
from oncostruct_shared.errors import Conflict, Invalid, Unprocessable, UpstreamUnavailable

from ..clients.triton import ModelUnknown
from ..config import Settings
from ..deps import ReaderDep, RunnerDep
from ..repository import cancel_job, find_job, get_job, list_jobs
from ..runner import JobRunner
from ..schemas import UID_PATTERN, JobCreate, JobPage, JobPublic, JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    created, _, job_id = cursor.partition("_")
    try:
        return datetime.fromisoformat(created), uuid.UUID(job_id)
    except ValueError:
        raise Invalid("The cursor is not one this API returned.", expression=["cursor"]) from None


async def _check_request(request: Request, data: JobCreate, version: str) -> None:
    """Refuse at once what can be known now: an unknown series or model version (peers away: the job will wait)."""
    runner: JobRunner = request.app.state.jobs
    try:
        await runner.triton(version).check_ready()
    except ModelUnknown as exc:
        raise Unprocessable(exc.detail, expression=["model_version"]) from None
    except UpstreamUnavailable:
        pass
    try:
        response = await runner.imaging_http.get(
            f"/studies/{data.study_uid}/series",
            params={"SeriesInstanceUID": data.series_uid},
            headers={"Accept": "application/dicom+json"},
        )
    except httpx.HTTPError:
        return
    if response.status_code in (200, 204) and not (response.content and response.json()):
        raise Unprocessable(
            f"Series {data.series_uid} of study {data.study_uid} is not in the imaging service.",
            expression=["series_uid"],
        )


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    responses={200: {"description": "The job of this series and model version exists already; it is returned."}},
)
async def submit(
    data: JobCreate, request: Request, response: Response, session: SessionDep, principal: RunnerDep
) -> JobPublic:
    """Analyse a series: 202 with a queued job, or 200 with the existing job of the same (series, model version).

    A failed job of the same pair is started again (keeping the outputs it stored). An unknown
    series or model version is refused with 422 when the imaging service and Triton can tell;
    while they are away the job is accepted and waits for them.
    """
    settings: Settings = request.app.state.settings
    runner: JobRunner = request.app.state.jobs
    version = data.model_version or settings.triton_model_version
    existing = await find_job(session, data.series_uid, settings.triton_model_name, version)
    if existing is None or existing.status in (JobStatus.failed, JobStatus.cancelled):
        await _check_request(request, data, version)
    job_id, queued = await runner.submit(data.study_uid, data.series_uid, version, data.project_id, principal.subject)
    if not queued:
        response.status_code = 200
    response.headers["Location"] = f"{settings.base_url}/jobs/{job_id}"
    session.expire_all()
    return JobPublic.model_validate(await get_job(session, job_id))


@router.get("", response_model=JobPage)
async def list_(
    request: Request,
    session: SessionDep,
    _: ReaderDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    study_uid: Annotated[str | None, Query(pattern=UID_PATTERN, description="Only jobs on this study.")] = None,
    series_uid: Annotated[str | None, Query(pattern=UID_PATTERN, description="Only jobs on this series.")] = None,
    model_version: Annotated[str | None, Query(max_length=32, description="Only jobs of this model version.")] = None,
    trigger: Annotated[str | None, Query(pattern="^(api|event)$", description="`api` or `event`.")] = None,
    limit: Annotated[int | None, Query(ge=1, description="Items per page.")] = None,
    cursor: Annotated[str | None, Query(description="The `next` value of the previous page.")] = None,
) -> JobPage:
    """List jobs, newest first."""
    settings: Settings = request.app.state.settings
    size = min(limit or settings.page_size_default, settings.page_size_max)
    filters = {
        "status": status.value if status else None,
        "study_instance_uid": study_uid,
        "series_instance_uid": series_uid,
        "model_version": model_version,
        "trigger": trigger,
    }
    rows = await list_jobs(session, filters, _decode_cursor(cursor) if cursor else None, size + 1)
    items = [JobPublic.model_validate(row) for row in rows[:size]]
    last = items[-1] if items else None
    following = f"{last.created_at.isoformat()}_{last.id}" if last and len(rows) > size else None
    return JobPage(items=items, next=following)


@router.get("/{job_id}", response_model=JobPublic)
async def read(job_id: uuid.UUID, session: SessionDep, _: ReaderDep) -> JobPublic:
    """Read one job and its state."""
    return JobPublic.model_validate(await get_job(session, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic)
async def cancel(job_id: uuid.UUID, request: Request, session: SessionDep, _: RunnerDep) -> JobPublic:
    """Cancel a queued or running job (a running one stops before its next stage; what it stored stays).

    Cancelling a cancelled job returns it unchanged; a finished one is a 409. Submitting the same
    series and model version again starts a cancelled job anew.
    """
    await get_job(session, job_id)  # 404 first
    if await cancel_job(session, job_id):
        runner: JobRunner = request.app.state.jobs
        await runner.withdraw(job_id)
    session.expire_all()
    job = await get_job(session, job_id)
    if job.status != JobStatus.cancelled:
        raise Conflict(f"Job {job_id} has {job.status}; only a queued or running job can be cancelled.")
    return JobPublic.model_validate(job)
