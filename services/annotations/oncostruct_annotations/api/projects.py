"""Projects: cohorts of patients and series that a team annotates together."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from oncostruct_shared.db import SessionDep
from oncostruct_shared.errors import Invalid

from ..config import Settings
from ..deps import ReaderDep, WriterDep
from ..repository import create_project, get_project, list_projects
from ..schemas import ProjectCreate, ProjectPage, ProjectPublic

router = APIRouter(prefix="/projects", tags=["projects"])


def _encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        name = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Invalid("The cursor is not one this API returned.", expression=["cursor"]) from None
    if not name:
        raise Invalid("The cursor is not one this API returned.", expression=["cursor"])
    return name


@router.post("", status_code=201, response_model=ProjectPublic)
async def create(
    data: ProjectCreate, request: Request, response: Response, session: SessionDep, principal: WriterDep
) -> ProjectPublic:
    """Create a project; its creator is recorded from the token's subject."""
    row = await create_project(session, data, principal.subject)
    settings: Settings = request.app.state.settings
    response.headers["Location"] = f"{settings.base_url}/projects/{row.id}"
    return ProjectPublic.model_validate(row)


@router.get("", response_model=ProjectPage)
async def list_(
    request: Request,
    session: SessionDep,
    _: ReaderDep,
    limit: Annotated[int | None, Query(ge=1, description="Items per page.")] = None,
    cursor: Annotated[str | None, Query(description="The `next` value of the previous page.")] = None,
) -> ProjectPage:
    """List projects by name, one page at a time."""
    settings: Settings = request.app.state.settings
    size = min(limit or settings.page_size_default, settings.page_size_max)
    rows = await list_projects(session, _decode_cursor(cursor) if cursor else None, size + 1)
    items = [ProjectPublic.model_validate(row) for row in rows[:size]]
    return ProjectPage(items=items, next=_encode_cursor(items[-1].name) if len(rows) > size else None)


@router.get("/{project_id}", response_model=ProjectPublic)
async def read(project_id: uuid.UUID, session: SessionDep, _: ReaderDep) -> ProjectPublic:
    """Read one project."""
    return ProjectPublic.model_validate(await get_project(session, project_id))
