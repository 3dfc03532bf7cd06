"""``Annotated`` dependency aliases of the clinical routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from oncostruct_shared.auth import PrincipalDep
from oncostruct_shared.db import SessionDep

from .interactions import Context


async def get_context(request: Request, session: SessionDep, principal: PrincipalDep) -> Context:
    """The interaction context of a request: its session, the settings and the caller's scopes."""
    return Context(session=session, settings=request.app.state.settings, scopes=principal.scopes)


ContextDep = Annotated[Context, Depends(get_context)]
