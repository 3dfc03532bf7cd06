"""A lean route class: the endpoint's context is opened in the route handler, not by FastAPI's solver.

Profiles of the clinical and imaging services showed FastAPI's per-request dependency solving
(the generator dependency's exit stack and cancel scope, parameter analysis) costing a third
of a small read. A :class:`ContextRoute` calls its endpoint as
``endpoint(request=request, ctx=ctx, **path_params)`` with ``ctx`` from
:meth:`ContextRoute.open_context`; the endpoint's signature still documents the route in
OpenAPI (path parameters, the ``ctx`` dependency's bearer security), and errors reach the
same exception handlers. Endpoints must take exactly the path parameters, ``request`` and
``ctx`` (checked when the route is declared); query parameters are read from the request.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from fastapi import Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from .auth import BearerDep, bearer_credentials

T = TypeVar("T")
#: Opens a request's context from the request and its bearer credentials (None without a token).
ContextOpener = Callable[[Request, HTTPAuthorizationCredentials | None], AbstractAsyncContextManager[T]]

_PATH_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")


class ContextRoute(APIRoute):
    """An APIRoute whose endpoint gets ``request``, ``ctx`` and the path parameters, nothing else."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        expected = set(_PATH_PARAMETER.findall(path)) | {"request", "ctx"}
        if set(inspect.signature(endpoint).parameters) != expected:
            raise TypeError(f"{endpoint.__name__} must take exactly {sorted(expected)} to be a {type(self).__name__}")
        super().__init__(path, endpoint, **kwargs)

    def open_context(self, request: Request) -> AbstractAsyncContextManager[Any]:
        """The context the endpoint gets as ``ctx`` (closed after the endpoint returns)."""
        raise NotImplementedError

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            async with self.open_context(request) as ctx:
                response: Response = await endpoint(request=request, ctx=ctx, **request.path_params)
                return response

        return handler


def bearer_context(opener: ContextOpener[T]) -> tuple[Callable[..., AsyncIterator[T]], type[ContextRoute]]:
    """The FastAPI dependency and the :class:`ContextRoute` class that both open ``opener``'s context.

    Declare endpoints with ``ctx: Annotated[Context, Depends(dependency)]`` (OpenAPI then shows the
    bearer security) and give their router ``route_class=route_class``.
    """

    async def dependency(request: Request, credentials: BearerDep) -> AsyncIterator[T]:
        async with opener(request, credentials) as context:
            yield context

    @asynccontextmanager
    async def open_with_bearer(request: Request) -> AsyncIterator[T]:
        async with opener(request, await bearer_credentials(request)) as context:
            yield context

    class Route(ContextRoute):
        def open_context(self, request: Request) -> AbstractAsyncContextManager[T]:
            return open_with_bearer(request)

    return dependency, Route
