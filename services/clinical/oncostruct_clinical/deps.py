"""``Annotated`` dependency aliases of the clinical routes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from oncostruct_shared.auth import BearerDep, get_principal
from oncostruct_shared.db import request_connection

from .interactions import Context

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


async def get_context(request: Request, credentials: BearerDep) -> AsyncIterator[Context]:
    """The interaction context of a request: its session, the settings, the caller's scopes and, for
    ``patient/`` scopes, the SMART launch-context patient (the token's ``patient`` claim).

    One dependency authenticates and opens the session (rather than a tree of small ones): every
    FHIR interaction needs both, and FastAPI's per-dependency cost showed in profiles of reads.
    """
    principal = await get_principal(request, credentials)
    patient = principal.claims.get("patient")
    valid = isinstance(patient, str) and _ID.match(patient) is not None
    async with request_connection(request) as connection:
        yield Context(
            session=connection,
            settings=request.app.state.settings,
            scopes=principal.scopes,
            patient=patient if valid else None,
            subject=principal.subject,
        )


ContextDep = Annotated[Context, Depends(get_context)]
