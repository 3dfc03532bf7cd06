"""The DICOMweb context of a request, as a dependency and as a lean route class.

Every DICOMweb route needs the caller (a bearer token with the scope of the request's
method: GET/HEAD ``dicomweb.read``, POST ``dicomweb.write``, DELETE ``dicomweb.delete``),
the settings, the object store and the index. :data:`DicomwebDep` provides them through
FastAPI's dependency injection (and documents the bearer security in OpenAPI);
:class:`DicomwebRoute` opens the same context in the route handler (see
:mod:`oncostruct_shared.routing`): the hot reads (a frame, metadata, QIDO) skip FastAPI's
dependency solver. The index is reached through :meth:`Dicomweb.pool` (single autocommit
statements on the plain asyncpg pool), :attr:`Dicomweb.connection` (a Core connection) or
:attr:`Dicomweb.session` (an ORM session), each opened on first use and closed with the context.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.ext.asyncio import AsyncSession

from oncostruct_shared.auth import (
    Principal,
    get_principal,
    insufficient_scope,
    require_scopes,
)
from oncostruct_shared.db import SAFE_METHODS, Database, LazyConnection, request_session
from oncostruct_shared.routing import bearer_context
from oncostruct_shared.storage import ObjectStore

from .config import Settings

#: The scope each HTTP method needs.
METHOD_SCOPES = {"GET": "dicomweb.read", "HEAD": "dicomweb.read", "POST": "dicomweb.write", "DELETE": "dicomweb.delete"}


class Dicomweb:
    """What a DICOMweb request works with."""

    def __init__(self, request: Request, principal: Principal) -> None:
        self.request = request
        self.principal = principal
        state = request.app.state
        self.settings: Settings = state.settings
        self.store: ObjectStore = state.store
        self.database: Database = state.db
        self._session: AsyncSession | None = None
        self._connection: LazyConnection | None = None

    async def pool(self) -> asyncpg.Pool:
        """The plain asyncpg pool (single autocommit statements only)."""
        return await self.database.driver_pool()

    @property
    def session(self) -> AsyncSession:
        """The request's ORM session (autocommit for GET/HEAD, transactional otherwise), opened on first use."""
        if self._session is None:
            self._session = request_session(self.request)
        return self._session

    @property
    def connection(self) -> LazyConnection:
        """The request's Core connection (autocommit for GET/HEAD), checked out on first use."""
        if self._connection is None:
            self._connection = LazyConnection(self.database, autocommit=self.request.method in SAFE_METHODS)
        return self._connection

    async def close(self) -> None:
        """Close the session and connection, if opened (rolling back what was not committed)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()


@asynccontextmanager
async def open_dicomweb(request: Request, credentials: HTTPAuthorizationCredentials | None) -> AsyncIterator[Dicomweb]:
    """The request's :class:`Dicomweb` context; 401 without a valid token, 403 without the method's scope."""
    principal = await get_principal(request, credentials)
    scope = METHOD_SCOPES.get(request.method, "dicomweb.write")
    if scope not in principal.scopes:
        raise insufficient_scope(scope)
    context = Dicomweb(request, principal)
    try:
        yield context
    finally:
        await context.close()


get_dicomweb, DicomwebRoute = bearer_context(open_dicomweb)
DicomwebDep = Annotated[Dicomweb, Depends(get_dicomweb)]


ReadScope = Annotated[Principal, Depends(require_scopes("dicomweb.read"))]
WriteScope = Annotated[Principal, Depends(require_scopes("dicomweb.write"))]


def get_settings(request: Request) -> Settings:
    """The service's settings."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
