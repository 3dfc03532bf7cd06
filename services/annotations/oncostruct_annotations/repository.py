"""SQL of the annotation service."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from oncostruct_shared.errors import Conflict, NotFound

from .models import ProjectRow
from .schemas import ProjectCreate


async def create_project(session: AsyncSession, data: ProjectCreate, created_by: str) -> ProjectRow:
    """Insert a project; :class:`Conflict` if the name is taken."""
    row = ProjectRow(id=uuid.uuid4(), name=data.name, description=data.description, created_by=created_by)
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"A project named {data.name!r} already exists.") from None
    await session.refresh(row)
    return row


async def get_project(session: AsyncSession, project_id: uuid.UUID) -> ProjectRow:
    """One project; :class:`NotFound` if absent."""
    row = await session.get(ProjectRow, project_id)
    if row is None:
        raise NotFound(f"Project {project_id} does not exist.")
    return row


async def list_projects(session: AsyncSession, after: str | None, limit: int) -> list[ProjectRow]:
    """Projects ordered by name, after the name ``after`` (keyset pagination)."""
    query = select(ProjectRow).order_by(ProjectRow.name).limit(limit)
    if after is not None:
        query = query.where(ProjectRow.name > after)
    return list((await session.scalars(query)).all())
