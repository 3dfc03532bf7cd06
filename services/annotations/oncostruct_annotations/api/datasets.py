"""AI-ready dataset exports: POST a cohort selection, follow the job, download the archive."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from oncostruct_shared.db import SessionDep
from oncostruct_shared.errors import Conflict, NotFound

from ..config import Settings
from ..dataset.clinical_context import parse_criteria
from ..dataset.export import DatasetExports
from ..deps import ReaderDep
from ..models import DatasetExportRow
from ..repository import require_role
from ..workflow import Status

router = APIRouter(prefix="/exports/datasets", tags=["exports"])


class LabelFilter(BaseModel):
    """A series-level label the series must carry (any value when ``value`` is omitted)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=100, examples=["normality"])
    value: Any = Field(None, examples=["abnormal"])


class DatasetExportCreate(BaseModel):
    """The cohort: a project's series, narrowed by series labels, annotation status and a FHIR search."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "project_id": "6f1c2b1e-4a55-4c47-9b8e-0f4f5c2a9d10",
                    "statuses": ["approved"],
                    "series_labels": [{"label": "normality", "value": "abnormal"}],
                    "fhir_query": "Condition?code=http://snomed.info/sct|254637007",
                }
            ]
        },
    )

    project_id: uuid.UUID
    statuses: Annotated[list[Status], Field(min_length=1)] = [Status.approved]
    series_labels: list[LabelFilter] = Field(default_factory=list, max_length=20)
    fhir_query: str | None = Field(
        None,
        max_length=2000,
        description="A FHIR search on the clinical service (`Type?params`); only its patients' series are kept.",
    )


class DatasetExportPublic(BaseModel):
    """An export job: its progress, then its archive."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    request: dict[str, Any]
    status: str = Field(description="`queued`, `running`, `succeeded` or `failed`.")
    stage: str | None
    progress: float
    error: str | None
    series_count: int | None
    summary: dict[str, Any] | None = Field(description="Counts of series, skipped series, patients and files.")
    archive_sha256: str | None
    archive_bytes: int | None
    archive_url: str | None = None
    created_by: str
    created_at: datetime
    finished_at: datetime | None


def _public(row: DatasetExportRow, settings: Settings) -> DatasetExportPublic:
    public = DatasetExportPublic.model_validate(row)
    if row.status == "succeeded":
        public.archive_url = f"{settings.base_url}/exports/datasets/{row.id}/archive"
    return public


async def _readable(session: SessionDep, export_id: uuid.UUID, subject: str) -> DatasetExportRow:
    row = await session.get(DatasetExportRow, export_id)
    if row is None:
        raise NotFound(f"Dataset export {export_id} does not exist.")
    await require_role(session, row.project_id, subject)
    return row


@router.post("", status_code=202, response_model=DatasetExportPublic)
async def create(
    data: DatasetExportCreate, request: Request, response: Response, session: SessionDep, principal: ReaderDep
) -> DatasetExportPublic:
    """Start an export of the project's series (any project member may); 202 with the queued job."""
    await require_role(session, data.project_id, principal.subject)
    if data.fhir_query:
        parse_criteria(data.fhir_query)
    row = DatasetExportRow(
        id=uuid.uuid4(),
        project_id=data.project_id,
        request=data.model_dump(mode="json", exclude={"project_id"}),
        status="queued",
        progress=0.0,
        attempts=0,
        created_by=principal.subject,
    )
    session.add(row)
    await session.commit()
    exports: DatasetExports = request.app.state.datasets
    await exports.enqueue(row.id)
    settings: Settings = request.app.state.settings
    response.headers["Location"] = f"{settings.base_url}/exports/datasets/{row.id}"
    await session.refresh(row)
    return _public(row, settings)


@router.get("/{export_id}", response_model=DatasetExportPublic)
async def read(
    export_id: uuid.UUID, request: Request, session: SessionDep, principal: ReaderDep
) -> DatasetExportPublic:
    """An export's status and progress, and its archive's URL, size and SHA-256 once done."""
    return _public(await _readable(session, export_id, principal.subject), request.app.state.settings)


@router.get(
    "/{export_id}/archive",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "The dataset archive."}},
)
async def archive(export_id: uuid.UUID, request: Request, session: SessionDep, principal: ReaderDep) -> FileResponse:
    """The finished dataset as a zip archive (409 while the export has not succeeded)."""
    row = await _readable(session, export_id, principal.subject)
    if row.status != "succeeded":
        raise Conflict(f"Dataset export {export_id} is {row.status}; the archive exists once it has succeeded.")
    exports: DatasetExports = request.app.state.datasets
    return FileResponse(
        exports.archive_path(export_id),
        media_type="application/zip",
        filename=f"dataset-{export_id}.zip",
        headers={"ETag": f'"{row.archive_sha256}"', "Digest": f"sha-256={row.archive_sha256}"},
    )
