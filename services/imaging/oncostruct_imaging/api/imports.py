"""Pull import from an upstream PACS (an OncoStruct extension beside the DICOMweb routes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from oncostruct_shared.db import SessionDep
from oncostruct_shared.errors import NotFound, Unprocessable

from ..deps import ReadScope, SettingsDep, WriteScope
from ..models import PullImportRow, PullImportStudyRow

router = APIRouter(prefix="/imports", tags=["pull import"])
Uid = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)]


class ImportCreate(BaseModel):
    """Studies to pull from a configured source: by Study Instance UID, or by a QIDO-RS study query."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"source": "hospital", "query": {"PatientID": "P-0001", "StudyDate": "2024"}}]},
    )

    source: str = Field(description="Name of a source in the `pacs_sources` setting.")
    studies: list[Uid] = Field(default_factory=list, max_length=10000)
    query: dict[str, str] | None = Field(None, description="QIDO-RS study-level matching keys, as sent to the source.")

    @model_validator(mode="after")
    def _one_selection(self) -> ImportCreate:
        if bool(self.studies) == bool(self.query):
            raise ValueError("give either studies or query")
        return self


class ImportPublic(BaseModel):
    """An import and its progress."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    source: str
    query: dict[str, Any] | None
    status: str
    studies_total: int
    studies_done: int
    instances_stored: int
    instances_existing: int
    instances_failed: int
    attempts: int
    error: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime


@router.post("", status_code=202, response_model=ImportPublic)
async def create(
    data: ImportCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    principal: WriteScope,
) -> ImportPublic:
    """Start pulling studies from a configured upstream PACS; poll the returned import for progress."""
    if data.source not in settings.pacs_sources:
        known = ", ".join(sorted(settings.pacs_sources)) or "none configured"
        raise Unprocessable(f"Unknown source {data.source!r} (known: {known}).", expression=["source"])
    row = PullImportRow(
        id=uuid.uuid4(),
        source=data.source,
        query=data.query,
        status="queued",
        studies_total=len(set(data.studies)),
        created_by=principal.subject,
    )
    session.add(row)
    await session.flush()
    if data.studies:
        await session.execute(
            insert(PullImportStudyRow)
            .values([{"import_id": row.id, "study_instance_uid": uid} for uid in data.studies])
            .on_conflict_do_nothing()
        )
    await session.commit()
    await request.app.state.pulls.start(row.id)
    await session.refresh(row)
    response.headers["Location"] = f"{settings.base_url}/imports/{row.id}"
    return ImportPublic.model_validate(row)


@router.get("/{import_id}", response_model=ImportPublic)
async def read(import_id: uuid.UUID, session: SessionDep, _: ReadScope) -> ImportPublic:
    """An import's status and progress (studies done, instances stored, already present, failed)."""
    row = await session.get(PullImportRow, import_id)
    if row is None:
        raise NotFound(f"Import {import_id} does not exist.")
    return ImportPublic.model_validate(row)


@router.get("", response_model=list[ImportPublic])
async def list_(session: SessionDep, _: ReadScope) -> list[ImportPublic]:
    """The 100 most recent imports."""
    rows = await session.scalars(select(PullImportRow).order_by(PullImportRow.created_at.desc()).limit(100))
    return [ImportPublic.model_validate(row) for row in rows]
