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
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response

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
