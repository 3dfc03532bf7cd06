"""``Annotated`` dependency aliases of the clinical routes."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request

from oncostruct_shared.auth import PrincipalDep
from oncostruct_shared.db import SessionDep

from .interactions import Context

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


async def get_context(request: Request, session: SessionDep, principal: PrincipalDep) -> Context:
    """The interaction context of a request: its session, the settings, the caller's scopes and, for
    ``patient/`` scopes, the SMART launch-context patient (the token's ``patient`` claim)."""
    patient = principal.claims.get("patient")
    valid = isinstance(patient, str) and _ID.match(patient) is not None
    return Context(
        session=session,
        settings=request.app.state.settings,
        scopes=principal.scopes,
        patient=patient if valid else None,
        subject=principal.subject,
    )


ContextDep = Annotated[Context, Depends(get_context)]
