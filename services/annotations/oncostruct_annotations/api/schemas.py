"""Label schemas: versioned vocabularies of coded labels for the three levels."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from oncostruct_shared.db import SessionDep

from ..config import Settings
from ..deps import ReaderDep, WriterDep
from ..repository import create_schema, get_schema, list_schemas
from ..schemas import LabelSchemaCreate, LabelSchemaPublic

router = APIRouter(prefix="/schemas", tags=["label schemas"])


@router.post("", status_code=201, response_model=LabelSchemaPublic)
async def create(
    data: LabelSchemaCreate, request: Request, response: Response, session: SessionDep, principal: WriterDep
) -> LabelSchemaPublic:
    """Create a new version of a label schema (versions are immutable; projects pin one)."""
    row = await create_schema(session, data, principal.subject)
    settings: Settings = request.app.state.settings
    response.headers["Location"] = f"{settings.base_url}/schemas/{row.id}"
    return LabelSchemaPublic.model_validate(row)


@router.get("", response_model=list[LabelSchemaPublic])
async def list_(
    session: SessionDep, _: ReaderDep, name: Annotated[str | None, Query(description="Only this schema.")] = None
) -> list[LabelSchemaPublic]:
    """List schema versions by name and version (the default `oncology` schema is installed on first start)."""
    return [LabelSchemaPublic.model_validate(row) for row in await list_schemas(session, name)]


@router.get("/{schema_id}", response_model=LabelSchemaPublic)
async def read(schema_id: uuid.UUID, session: SessionDep, _: ReaderDep) -> LabelSchemaPublic:
    """Read one schema version with its labels and coded values."""
    return LabelSchemaPublic.model_validate(await get_schema(session, schema_id))
