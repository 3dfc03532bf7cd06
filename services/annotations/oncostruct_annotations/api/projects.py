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
from ..repository import (
    create_project,
    get_project,
    list_members,
    list_projects,
    put_member,
    remove_member,
    require_role,
)
from ..schemas import MemberPublic, MemberPut, ProjectCreate, ProjectPage, ProjectPublic, Role

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
    principal: ReaderDep,
    limit: Annotated[int | None, Query(ge=1, description="Items per page.")] = None,
    cursor: Annotated[str | None, Query(description="The `next` value of the previous page.")] = None,
) -> ProjectPage:
    """List the projects you are a member of, by name, one page at a time."""
    settings: Settings = request.app.state.settings
    size = min(limit or settings.page_size_default, settings.page_size_max)
    rows = await list_projects(session, principal.subject, _decode_cursor(cursor) if cursor else None, size + 1)
    items = [ProjectPublic.model_validate(row) for row in rows[:size]]
    return ProjectPage(items=items, next=_encode_cursor(items[-1].name) if len(rows) > size else None)


@router.get("/{project_id}", response_model=ProjectPublic)
async def read(project_id: uuid.UUID, session: SessionDep, principal: ReaderDep) -> ProjectPublic:
    """Read one project (members only)."""
    await require_role(session, project_id, principal.subject)
    return ProjectPublic.model_validate(await get_project(session, project_id))


@router.get("/{project_id}/members", response_model=list[MemberPublic])
async def members(project_id: uuid.UUID, session: SessionDep, principal: ReaderDep) -> list[MemberPublic]:
    """List a project's members and their roles (members only)."""
    await require_role(session, project_id, principal.subject)
    return [MemberPublic.model_validate(row) for row in await list_members(session, project_id)]


@router.put("/{project_id}/members/{subject}", response_model=MemberPublic)
async def put(
    project_id: uuid.UUID, subject: str, data: MemberPut, session: SessionDep, principal: WriterDep
) -> MemberPublic:
    """Add a member (a person's or a service client's token subject) or change their role (managers only)."""
    await require_role(session, project_id, principal.subject, Role.manager)
    return MemberPublic.model_validate(await put_member(session, project_id, subject, data.role))


@router.delete("/{project_id}/members/{subject}", status_code=204)
async def remove(project_id: uuid.UUID, subject: str, session: SessionDep, principal: WriterDep) -> None:
    """Remove a member (managers only; a project keeps at least one manager)."""
    await require_role(session, project_id, principal.subject, Role.manager)
    await remove_member(session, project_id, subject)
